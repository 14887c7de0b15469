"""bee-keeper's batch envelope: one message, many injuries, some of them free text.

The bee-keeper that exists publishes, with no headers,

    {"agent": "bee.Keeper", "injuries": ["GitHub: Failed to post purity report comment."],
     "timestamp": 81234.5}

Each entry of `injuries` becomes an injury of its own, with a stable id (the envelope's id, then
`:<index>`) and its own outcome, event and page. An entry is a documented injury object (it
inherits the envelope's `timestamp` and `agent` when it has none) or a free-text string, which
becomes a `free_text` injury with the text as its `description`: escalated unless a playbook
says otherwise. A bad entry is refused alone, naming its index; the others go on.
"""

from __future__ import annotations

import math
from typing import Any

from auto_healer.contracts import FREE_TEXT, ParsedInjury, parse_injury_obj
from auto_healer.errors import InjuryRejected

MAX_ENTRIES = 10_000
MAX_TEXT_CHARS = 20_000

Entry = tuple[str, ParsedInjury | InjuryRejected]  # (entry id, the injury or why not)


def is_envelope(doc: Any) -> bool:
    """A JSON object with an `injuries` list that is not itself a documented injury."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("injuries"), list)
        and ("injury_type" not in doc)
    )


def free_text_injury(text: str, *, agent: str | None, timestamp: float) -> dict[str, Any]:
    """The injury a free-text entry stands for (its severity and auto_heal may be changed by
    the playbook that claims it)."""
    return {
        "timestamp": timestamp,
        "injury_type": FREE_TEXT,
        "affected_path": ".",
        "severity": "medium",
        "recommended_action": "escalate",
        "auto_heal": False,
        "description": text,
        **({"source": agent} if agent is not None else {}),
    }


def split(doc: dict[str, Any], envelope_id: str, *, received_at: float) -> list[Entry]:
    """Every entry of an envelope, each with its id: an injury, or the reason it is refused."""
    entries: list[Any] = doc["injuries"]
    agent = doc.get("agent")
    agent = agent[:200] if isinstance(agent, str) and agent.strip() else None
    stamp = doc.get("timestamp")
    timestamp = (
        float(stamp)
        if isinstance(stamp, int | float)
        and not isinstance(stamp, bool)
        and math.isfinite(stamp)
        and stamp >= 0
        else received_at
    )
    out: list[Entry] = []
    for i, entry in enumerate(entries[:MAX_ENTRIES]):
        entry_id = f"{envelope_id}:{i}"
        try:
            out.append((entry_id, _entry(entry, entry_id, agent, timestamp, received_at)))
        except InjuryRejected as exc:
            out.append((entry_id, InjuryRejected(f"injuries[{i}]: {exc}")))
    if len(entries) > MAX_ENTRIES:
        extra = InjuryRejected(
            f"injuries[{MAX_ENTRIES}:]: {len(entries) - MAX_ENTRIES} entries over the "
            f"{MAX_ENTRIES} an envelope may hold"
        )
        out.append((f"{envelope_id}:{MAX_ENTRIES}+", extra))
    return out


def _entry(
    entry: Any, entry_id: str, agent: str | None, timestamp: float, received_at: float
) -> ParsedInjury:
    if isinstance(entry, str):
        text = entry.strip()
        if not text:
            raise InjuryRejected("an empty free-text injury")
        if len(text) > MAX_TEXT_CHARS:
            raise InjuryRejected(f"free text of {len(text)} characters, over {MAX_TEXT_CHARS}")
        payload = free_text_injury(text, agent=agent, timestamp=timestamp)
    elif isinstance(entry, dict):
        payload = {"timestamp": timestamp, **({"source": agent} if agent else {}), **entry}
    else:
        raise InjuryRejected(
            f"an entry must be an injury object or a free-text string, got {type(entry).__name__}"
        )
    parsed = parse_injury_obj(payload)
    return parsed.model_copy(update={"id": entry_id, "received_at": received_at})
