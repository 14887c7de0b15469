"""The fix that does not hold: the same problem (repository + injury_type + path) healed again
and again within a window.

A playbook with `recurrence: {max_heals: 3, window_s: 86400}` records each heal of a problem
(its commit) in the controls bucket, under `recur.<hash>`. When the problem comes back after
`max_heals` heals in the window, the guard stops healing it automatically: the injury becomes
an approval request (see `approvals`) whose page says the fix does not hold and names the heal
commits. A human approves (healed once more) or rejects it; the window's end forgets the count.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from auto_healer.controls import Cells
from auto_healer.coordination import kv_key
from auto_healer.errors import TransientError

RECURRENCE_PREFIX = "recur."
MAX_RACES = 20


@dataclass(frozen=True)
class Heals:
    """The heals of one problem in its current window."""

    start: float
    commits: list[str] = field(default_factory=list)


def recurrence_key(repo: str, injury_type: str, problem: str) -> str:
    return RECURRENCE_PREFIX + kv_key(repo, injury_type, problem)


async def heals(cells: Cells, key: str, window_s: float, now: float | None = None) -> Heals:
    """The heals recorded for a problem in its window (none once the window ended)."""
    at = time.time() if now is None else now
    found = await cells.read(key)
    current = _load(found[0]) if found else None
    if current is None or at >= current.start + window_s:
        return Heals(start=at)
    return current


async def record(
    cells: Cells, key: str, commit: str, window_s: float, now: float | None = None
) -> Heals:
    """Add one heal (its commit) to the problem's window; a new window once the last ended."""
    for _ in range(MAX_RACES):
        at = time.time() if now is None else now
        found = await cells.read(key)
        current = _load(found[0]) if found else None
        if current is None or at >= current.start + window_s:
            current = Heals(start=at)
        updated = Heals(current.start, [*current.commits, commit])
        if await cells.swap(key, json.dumps(asdict(updated)).encode(), found[1] if found else None):
            return updated
    raise TransientError("the recurrence count kept changing under us")


def _load(value: bytes) -> Heals | None:
    try:
        return Heals(**json.loads(value))
    except (ValueError, TypeError):
        return None
