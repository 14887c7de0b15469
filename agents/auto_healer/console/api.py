"""The console's JSON API under `/api`, and the reads and writes its pages share.

Reads: `GET /api/history` (`since`, `kind`, `playbook`, `path`, `limit`), `/api/injury/ID`,
`/api/approvals`, `/api/dead-letters`, `/api/pause`, `/api/breakers`, `/api/replicas`,
`/api/chart`. Writes (`POST`, `Authorization: Bearer <CONSOLE_TOKEN>`): `/api/pause`
(`reason`, `playbook`), `/api/resume`, `/api/approve` and `/api/reject` (`injury_id`,
`reason`, and `request`: the fingerprint `/api/approvals` gives, so that only the request seen is
decided), `/api/replay` (`seq`), `/api/reset-breaker` (`repo`); fields as a form or JSON.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from auto_healer import history
from auto_healer.console.backend import Backend
from auto_healer.console.security import Guardian, Refused
from auto_healer.console.web import Request, Response, as_json
from auto_healer.errors import ConfigError, TransientError
from auto_healer.sources.dead_letters import DeadLetter
from auto_healer.sources.nats_stream import parse_since

DEFAULT_SINCE = "24h"
MAX_ROWS = 500
CHART_KINDS = {"healed": "injury_healed", "escalated": "injury_escalated"}
CHART_KINDS["failed"] = "injury_heal_failed"


def since_seconds(text: str | None) -> float:
    """Seconds back to read the history from (`24h`, `90m`, an ISO time...)."""
    try:
        when = parse_since(text or DEFAULT_SINCE)
    except OverflowError:  # a duration further back than any date
        raise ConfigError(f"since {text!r}: too far back") from None
    return max(1.0, datetime.now(UTC).timestamp() - when.timestamp())


def outcomes(backend: Backend, q: dict[str, str]) -> list[history.Entry]:
    """The history filtered as asked, newest first: the outcome list of the API and the page."""
    found = history.select(
        backend.history(since_seconds(q.get("since"))),
        kind=q.get("kind") or None,
        path=q.get("path") or None,
    )
    playbook = q.get("playbook")
    if playbook:
        found = [e for e in found if fnmatch.fnmatchcase(str(e.meta.get("playbook", "")), playbook)]
    try:
        limit = min(MAX_ROWS, max(1, int(q.get("limit") or 200)))
    except ValueError:
        raise ConfigError(f"limit {q.get('limit')!r}: not a number") from None
    return list(reversed(found))[:limit]


def per_hour(entries: list[history.Entry], hours: int = 24, now: float | None = None) -> list[Any]:
    """Heals, escalations and failures in each of the last `hours` hours, oldest first."""
    end = (int(now if now is not None else time.time()) // 3600 + 1) * 3600
    zero = dict.fromkeys(CHART_KINDS, 0)
    rows = [{"hour": end - 3600 * (hours - i), **zero} for i in range(hours)]
    for e in entries:
        slot = hours - 1 - int((end - 1 - e.at) // 3600)
        for label, event_type in CHART_KINDS.items():
            if e.event_type == event_type and 0 <= slot < hours:
                rows[slot][label] += 1
    return rows


def letter_doc(d: DeadLetter) -> dict[str, Any]:
    body = d.data.decode("utf-8", "replace")
    return {
        "seq": d.seq,
        "at": d.at,
        "reason": d.reason,
        "outcome": d.outcome,
        "injury_id": d.injury_id,
        "subject": d.subject,
        "body": body,
    }


Action = Callable[[Backend, dict[str, str], str], str]


def _field(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise Refused(400, f"{name!r} is required")
    return value


def _seq(form: dict[str, str]) -> int:
    try:
        return int(_field(form, "seq"))
    except ValueError:
        raise Refused(400, "'seq' must be a number") from None


ACTIONS: dict[str, Action] = {
    "pause": lambda b, f, by: b.pause(
        by=by, reason=f.get("reason", "").strip(), playbook=f.get("playbook") or None
    ),
    "resume": lambda b, f, by: b.resume(by=by, playbook=f.get("playbook") or None),
    "approve": lambda b, f, by: b.decide(
        _field(f, "injury_id"),
        approve=True,
        by=by,
        reason=f.get("reason", ""),
        fingerprint=f.get("request") or None,
    ),
    "reject": lambda b, f, by: b.decide(
        _field(f, "injury_id"),
        approve=False,
        by=by,
        reason=f.get("reason", ""),
        fingerprint=f.get("request") or None,
    ),
    "replay": lambda b, f, by: b.replay(_seq(f), by=by),
    "reset-breaker": lambda b, f, by: b.reset_breaker(_field(f, "repo"), by=by),
}


def act(backend: Backend, action: str, form: dict[str, str], by: str) -> str:
    """Carry out one operator action (the CLI's call) as `by`; a line saying what was done."""
    run = ACTIONS.get(action)
    if run is None:
        raise Refused(404, f"no action {action!r}")
    return run(backend, form, by)


def unanswered(method: str) -> str:
    """What to say when NATS (or its KV store) did not answer in time: a write sent may still
    land once it is back, so the operator must look before trying again."""
    if method != "POST":
        return "NATS did not answer in time"
    return "NATS did not answer in time: this may still be done once it is back; reload to see"


def no_answer_status(exc: Exception) -> int:
    return 504 if isinstance(exc, TimeoutError) else 503


def handle(backend: Backend, guardian: Guardian, req: Request) -> Response:
    """Answer one `/api/...` request."""
    try:
        if req.method == "POST":
            h = req.headers
            by = guardian.api_writer(h.get("authorization"), h.get("origin"), req.host)
            done = act(backend, req.path.removeprefix("/api/"), req.form, by)
            return as_json({"ok": True, "done": done, "by": by})
        if req.method != "GET":
            return as_json({"error": "GET or POST"}, 405)
        return as_json(_read(backend, req))
    except Refused as exc:
        return as_json({"error": exc.reason}, exc.status)
    except ConfigError as exc:
        return as_json({"error": str(exc)}, 409 if req.method == "POST" else 400)
    except (TimeoutError, TransientError) as exc:
        return as_json({"error": unanswered(req.method)}, no_answer_status(exc))


def _read(backend: Backend, req: Request) -> Any:
    path, q = req.path.removeprefix("/api/"), req.query
    if path == "history":
        return [e.as_dict() for e in outcomes(backend, q)]
    if path.startswith("injury/"):
        injury_id = path.removeprefix("injury/")
        entries = backend.history(since_seconds(q.get("since") or "30d"))
        found = history.select(entries, injury_id=injury_id)
        return {"injury_id": injury_id, "story": [e.as_dict() for e in found]}
    if path == "dead-letters":
        return [letter_doc(d) for d in backend.dead_letters()]
    if path == "chart":
        return per_hour(backend.history(24 * 3600))
    snap = backend.snapshot()
    reads: dict[str, Callable[[], Any]] = {
        "approvals": lambda: [{**asdict(r), "request": r.fingerprint} for r in snap.approvals],
        "pause": lambda: snap.pause,
        "breakers": lambda: snap.breakers,
        "replicas": lambda: [asdict(r) for r in snap.replicas],
    }
    if path not in reads:
        raise Refused(404, f"no /api/{path}")
    return reads[path]()
