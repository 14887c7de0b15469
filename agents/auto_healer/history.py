"""The heal history: every outcome event, and every operator control, kept in a stream.

The agent announces each final outcome on `aura.hive.events.injury_*`; the JetStream stream
`AURA_HEAL_HISTORY` captures those subjects (and `aura.hive.events.auto_healer_control`, where
`pause`, `resume` and `reset-breaker` announce themselves), bounded by `HISTORY_MAX_AGE_S` and
`HISTORY_MAX_BYTES`, oldest dropped first. It outlives every replica: `auto-healer history` and
`auto-healer show INJURY_ID` read it back. The stream object comes from the caller: this module
knows no NATS.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from auto_healer.contracts import event_subject
from auto_healer.decision import EVENT_TYPES
from auto_healer.encoding import decode
from auto_healer.errors import ConfigError
from auto_healer.outcomes import Kind
from auto_healer.settings import ControlSettings
from auto_healer.sources import Delivery

log = structlog.get_logger("auto_healer.history")
HISTORY_STREAM = "AURA_HEAL_HISTORY"
CONTROL_EVENT = "auto_healer_control"
HISTORY_SUBJECTS = [
    *sorted({event_subject(t) for t in EVENT_TYPES.values()}),
    event_subject(CONTROL_EVENT),
]


async def ensure_history(
    js: Any, settings: ControlSettings, *, required: bool, replicas: int = 1
) -> bool:
    """Create (or bring to the configured limits) the history stream; False when the server
    refuses (no JetStream, or another stream already captures those subjects): the agent heals
    on without a history, and says so. With `required` (JetStream mode) a refusal is an error."""
    config = {
        "name": HISTORY_STREAM,
        "subjects": HISTORY_SUBJECTS,
        "max_age": settings.history_max_age_s,
        "max_bytes": settings.history_max_bytes,
        "num_replicas": replicas,
        "description": "auto-healer: every outcome and operator control (see history.py)",
    }
    try:
        try:
            await js.add_stream(**config)
        except Exception:  # it exists with other limits: keep it, with the limits asked now
            await js.update_stream(**config)
    except Exception as exc:
        why = f"cannot keep the heal history in {HISTORY_STREAM}: {exc or type(exc).__name__}"
        if required:
            raise ConfigError(why) from None
        log.warning("history_unavailable", error=why)
        return False
    return True


@dataclass(frozen=True)
class Entry:
    """One event of the history."""

    at: float  # stream time
    event_type: str
    doc: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.doc.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def injury_id(self) -> str | None:
        value = self.meta.get("injury_id")
        return str(value) if value else None

    @property
    def path(self) -> str:
        injury = self.meta.get("injury")
        return str(injury.get("affected_path", "")) if isinstance(injury, dict) else ""

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "event_type": self.event_type, **self.doc}


def entries(deliveries: Iterable[Delivery]) -> list[Entry]:
    """The readable events among the stream's messages (anything else is skipped)."""
    found = []
    for d in deliveries:
        try:
            doc = decode(d.data, d.headers)
        except ValueError:
            continue
        found.append(Entry(d.received_at, d.subject.rsplit(".", 1)[-1], doc))
    return found


def select(
    found: Iterable[Entry],
    *,
    kind: str | None = None,
    path: str | None = None,
    injury_id: str | None = None,
) -> list[Entry]:
    """The entries of one outcome kind (`healed`, `held`, `control`...), one path glob, one
    injury."""
    wanted = None
    if kind is not None:
        kinds = {k.value: EVENT_TYPES[k] for k in Kind}
        wanted = CONTROL_EVENT if kind == "control" else kinds.get(kind)
        if wanted is None:
            raise ConfigError(f"--kind {kind!r}: one of {', '.join([*kinds, 'control'])}")
    return [
        e
        for e in found
        if (wanted is None or e.event_type == wanted)
        and (path is None or fnmatch.fnmatchcase(e.path, path))
        and (injury_id is None or e.injury_id == injury_id)
    ]


def text_line(e: Entry) -> str:
    """One entry as a line of `history`."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
    m = e.meta
    if e.event_type == CONTROL_EVENT:
        what = f"{m.get('control')} by {m.get('by')}"
        extra = m.get("reason") or m.get("playbook") or m.get("repo") or ""
        return f"{when}Z  control   {what}  {extra}".rstrip()
    outcome = m.get("outcome", e.event_type)
    commit = f"  {str(m.get('commit'))[:12]}" if m.get("commit") else ""
    verified = m.get("verified")
    commit += " verified" if verified is True else " NOT VERIFIED" if verified is False else ""
    return (
        f"{when}Z  {outcome:<9} {e.injury_id or '-'}  {e.path or '-'}  "
        f"[{m.get('playbook') or '-'}]{commit}  {str(m.get('reason', ''))[:120]}"
    )


def story(injury_id: str, found: list[Entry]) -> list[str]:
    """One injury's whole story, in order: every outcome it had, with its decision's effects."""
    lines = [f"injury {injury_id}"]
    for e in found:
        m = e.meta
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
        if e.event_type == CONTROL_EVENT:  # a human's decision on it (approved, rejected)
            why = f": {m['reason']}" if m.get("reason") else ""
            lines.append(f"{when}Z  {m.get('control')} by {m.get('by')}{why}")
            continue
        lines.append(f"{when}Z  {m.get('outcome', e.event_type)}: {m.get('reason', '')}")
        injury = m.get("injury")
        if isinstance(injury, dict):
            lines.append(
                f"    injury: {injury.get('injury_type')} at {injury.get('affected_path')}"
                f" (severity {injury.get('severity')}, auto_heal {injury.get('auto_heal')})"
            )
        for label, key in (
            ("playbook", "playbook"),
            ("commit", "commit"),
            ("branch", "branch"),
            ("repo", "repo"),
            ("paged", "page"),
            ("escalation", "escalation"),
            ("settled", "settle"),
            ("dead-lettered", "dead_lettered"),
            ("verified", "verified"),
            ("approved by", "approved_by"),
        ):
            if m.get(key) not in (None, "", False) or (key == "verified" and m.get(key) is False):
                lines.append(f"    {label}: {m[key]}")
    return lines
