"""The Hive's alerts as injuries: `aura.hive.events.alert_<severity>` and `.error` messages
(protobuf `aura.core.v1.Event` with an `alert` payload, or JSON) become injuries of type
`alert` with their message as `description`, so playbooks can route them like free text.

An alert is never healed by itself: it is `auto_heal: false` unless a text playbook says
otherwise. The agent's own outcome events are never taken back in as alerts (no loop).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from auto_healer.contracts import ALERT, SUBJECT_EVENTS_PREFIX, ParsedInjury, parse_injury_obj
from auto_healer.decision import EVENT_TYPES
from auto_healer.encoding import SERVICE, decode
from auto_healer.errors import ConfigError, InjuryRejected

SEVERITY = {
    "SEVERITY_CRITICAL": "critical",
    "SEVERITY_ERROR": "high",
    "SEVERITY_WARNING": "medium",
    "SEVERITY_INFO": "low",
    "critical": "critical",
    "error": "high",
    "high": "high",
    "warning": "medium",
    "medium": "medium",
    "info": "low",
    "low": "low",
}
OWN_SUBJECTS = tuple(f"{SUBJECT_EVENTS_PREFIX}.{t}" for t in EVENT_TYPES.values())


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching (`*` one token, a final `>` one or more), plus the Hive's own
    notation of a wildcard inside a token (`alert_*`), which NATS itself cannot subscribe to."""
    want, got = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(got) > i
        if i >= len(got) or not fnmatch.fnmatchcase(got[i], part):
            return False
    return len(want) == len(got)


def subscription(pattern: str) -> str:
    """What to subscribe to for a pattern: a token with a wildcard inside becomes `*` (the
    source then keeps only the subjects the pattern itself matches)."""
    return ".".join("*" if "*" in part else part for part in pattern.split("."))


def check_subjects(subjects: Iterable[str]) -> list[str]:
    """The alert subjects to consume; `ConfigError` for one that would take our own events."""
    out = []
    for subject in subjects:
        own = next((s for s in OWN_SUBJECTS if subject_matches(subject, s)), None)
        if own is not None or subject_matches(subject, "aura.hive.injury"):
            raise ConfigError(
                f"--source-subject {subject!r} would consume {own or 'aura.hive.injury'}: "
                "use the Hive's alert subjects, e.g. 'aura.hive.events.alert_*'"
            )
        out.append(subject)
    return out


def alert_injury(
    data: bytes, headers: Mapping[str, str] | None, *, received_at: float, fallback_id: str
) -> ParsedInjury:
    """The injury an alert stands for, or `InjuryRejected` saying why it is none."""
    try:
        doc = decode(data, headers)
    except ValueError as exc:
        raise InjuryRejected(f"not an alert: {exc}") from None
    nested = doc.get("alert")
    alert: dict[str, Any] = nested if isinstance(nested, dict) else doc
    message = alert.get("message")
    if not isinstance(message, str) or not message.strip():
        raise InjuryRejected("not an alert: no message")
    source = alert.get("source") if isinstance(alert.get("source"), str) else None
    if source == SERVICE:
        raise InjuryRejected("an alert of auto-healer's own is not taken back in")
    severity = SEVERITY.get(str(alert.get("severity", "")), "medium")
    payload: dict[str, Any] = {
        "timestamp": _epoch(doc.get("timestamp")) or received_at,
        "injury_type": ALERT,
        "affected_path": ".",
        "severity": severity,
        "recommended_action": "escalate",
        "auto_heal": False,
        "description": message.strip()[:20_000],
        **({"source": source[:200]} if source else {}),
    }
    parsed = parse_injury_obj(payload)
    ident = doc.get("identifier")
    ident = ident if isinstance(ident, str) and ident.strip() and _text(ident) else fallback_id
    return parsed.model_copy(update={"id": f"alert:{ident[:200]}", "received_at": received_at})


def _text(value: str) -> bool:
    """Whether a string is text (no lone surrogate, which no strict JSON reader reads back)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _epoch(stamp: Any) -> float | None:
    """An Event's RFC 3339 timestamp or a JSON number, as Unix time (a JSON integer too large
    for a float is kept as infinity: the contract then refuses it)."""
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp >= 0:
        try:
            return float(stamp)
        except OverflowError:
            return math.inf
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
