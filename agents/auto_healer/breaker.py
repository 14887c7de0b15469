"""The blast-radius breaker: at most `max_heals` injuries healed per repository per window,
counted in the controls bucket so every replica counts together.

A heal reserves its place before it touches the checkout (compare-and-set on the repository's
cell, so two replicas never both take the last place) and gives it back when it did not heal.
The first reservation past the limit trips the breaker: exactly one replica wins that write, and
only its injury carries the page. While open, injuries are held (see `decision`), not healed and
not lost, until `auto-healer reset-breaker REPO` or, unless `BREAKER_MANUAL_RESET`, the end of
the window. The window is fixed: it starts at the first heal after the last one ended.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from auto_healer.controls import BREAKER_PREFIX, Cells
from auto_healer.coordination import kv_key
from auto_healer.errors import TransientError

MAX_RACES = 50


@dataclass(frozen=True)
class Limits:
    """How many heals a window allows; `max_heals == 0` turns the breaker off."""

    max_heals: int
    window_s: float
    manual_reset: bool = False


@dataclass(frozen=True)
class State:
    """One repository's breaker, as stored (JSON) in the controls bucket."""

    repo: str
    start: float
    count: int = 0
    open: bool = False
    opened_at: float | None = None
    held: int = 0

    def expired(self, limits: Limits, now: float) -> bool:
        """Whether the window ended, and with it (unless a human must reset it) an open breaker."""
        if self.open and limits.manual_reset:
            return False
        return now >= self.start + limits.window_s


class Verdict(StrEnum):
    """What the breaker says to one heal."""

    GO = "go"  # heal; a place is reserved
    TRIPPED = "tripped"  # this heal tripped the breaker: held, and it carries the one page
    OPEN = "open"  # held


def scope(repo: str, playbook: str | None = None) -> str:
    """What a breaker counts: a repository's heals, or one playbook's heals on it (a playbook's
    `breaker:`, a lower limit counted apart)."""
    return repo if playbook is None else f"{repo} playbook {playbook}"


def breaker_key(repo: str) -> str:
    return BREAKER_PREFIX + kv_key(repo)


def is_open(doc: dict[str, Any] | None, limits: Limits, now: float | None = None) -> bool:
    """Whether a stored breaker (as the controls' mirror holds it) stops heals now."""
    if not doc or limits.max_heals == 0:
        return False
    try:
        state = State(**doc)
    except TypeError:
        return False
    return state.open and not state.expired(limits, time.time() if now is None else now)


async def reserve(cells: Cells, repo: str, limits: Limits, now: float | None = None) -> Verdict:
    """Take a place for one heal in the current window, or trip / find the breaker open."""
    if limits.max_heals == 0:
        return Verdict.GO
    key = breaker_key(repo)
    for _ in range(MAX_RACES):
        at = time.time() if now is None else now
        found = await cells.read(key)
        state = _load(found, repo, at)
        if state.expired(limits, at):
            state = State(repo=repo, start=at)
        if state.open:
            new, verdict = replace(state, held=state.held + 1), Verdict.OPEN
        elif state.count < limits.max_heals:
            new, verdict = replace(state, count=state.count + 1), Verdict.GO
        else:
            new, verdict = replace(state, open=True, opened_at=at, held=1), Verdict.TRIPPED
        if await cells.swap(key, _dump(new), found[1] if found else None):
            return verdict
    raise TransientError("the breaker's count kept changing under us")


async def reserve_many(
    cells: Cells, repo: str, limits: Limits, n: int, now: float | None = None
) -> list[Verdict]:
    """Take places for `n` heals with one compare-and-set: the verdicts, in order, that `n`
    calls of `reserve` in a row at the same time would give (a burst waiting on one replica
    costs one write, not `n` in turn)."""
    if limits.max_heals == 0 or n == 0:
        return [Verdict.GO] * n
    key = breaker_key(repo)
    for _ in range(MAX_RACES):
        at = time.time() if now is None else now
        found = await cells.read(key)
        state, verdicts = _load(found, repo, at), []
        for _ in range(n):
            state, verdict = _next(state, limits, at)
            verdicts.append(verdict)
        if await cells.swap(key, _dump(state), found[1] if found else None):
            return verdicts
    raise TransientError("the breaker's count kept changing under us")


def _next(state: State, limits: Limits, at: float) -> tuple[State, Verdict]:
    """One more reservation at `at`: what `reserve` decides for the state it read."""
    if state.expired(limits, at):
        state = State(repo=state.repo, start=at)
    if state.open:
        return replace(state, held=state.held + 1), Verdict.OPEN
    if state.count < limits.max_heals:
        return replace(state, count=state.count + 1), Verdict.GO
    return replace(state, open=True, opened_at=at, held=1), Verdict.TRIPPED


async def release(cells: Cells, repo: str) -> None:
    """Give back a place that did not heal (skipped, failed, escalated)."""
    key = breaker_key(repo)
    for _ in range(MAX_RACES):
        found = await cells.read(key)
        if found is None:
            return
        state = _load(found, repo, time.time())
        if state.count == 0:
            return
        if await cells.swap(key, _dump(replace(state, count=state.count - 1)), found[1]):
            return


async def reset(cells: Cells, repo: str) -> State | None:
    """Close the breaker and start a new window; the state it had, if any."""
    key = breaker_key(repo)
    found = await cells.read(key)
    await cells.delete(key)
    return _load(found, repo, time.time()) if found else None


async def status(cells: Cells, repo: str) -> State | None:
    found = await cells.read(breaker_key(repo))
    return _load(found, repo, time.time()) if found else None


def _load(found: tuple[bytes, int] | None, repo: str, now: float) -> State:
    if found is None:
        return State(repo=repo, start=now)
    try:
        return State(**json.loads(found[0]))
    except (ValueError, TypeError):
        return State(repo=repo, start=now)


def _dump(state: State) -> bytes:
    return json.dumps(asdict(state)).encode()
