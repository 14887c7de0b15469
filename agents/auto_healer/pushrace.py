"""Pushes that win against a busy remote: rebase the heal onto the remote's new head and push
again at once, for as long as the race budget lasts.

A push the remote rejects because it moved (non-fast-forward) is not a failed heal. The heal
commit is rebased onto the new head (never forced), the heal is re-checked there (every path
it deleted or wrote is in the rebased commit exactly as in the heal's own commit: a deleted
directory still absent, a formatter's output still as written), and the push is tried again
after a little jitter. When the remote's new commits touched a heal's own paths, or the rebase
conflicts (it is aborted), the rebase is not trusted: `Replan` has the heal planned again on
the new head. Rejected pushes and re-plans are bounded by time (`PUSH_RACE_BUDGET_S`), not by
a small count; once it is spent the heal fails with `PushRaceLost`, a retryable failure that
the heal's own retry loop does not repeat (the decision naks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from auto_healer.checkout import Checkout
from auto_healer.errors import HealFailed, TransientError
from auto_healer.paths import with_parents

log = structlog.get_logger("auto_healer.healer")
T = TypeVar("T")
JITTER_S = 0.1  # up to this long between a lost push and the next fetch: replicas fall out of step
# What git says when the remote moved under a push (the rest, the network, is retried as ever).
_MOVED = re.compile(
    r"\[rejected\]|non-fast-forward|fetch first|failed to update ref|cannot lock ref"
    r"|stale info|failed to lock",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Change:
    """What one heal changed: the directories it deleted, the files it wrote."""

    delete: tuple[str, ...] = ()
    write: Mapping[str, bytes] = field(default_factory=dict)

    def paths(self) -> Iterable[str]:
        return (*self.delete, *self.write)


class Replan(TransientError):
    """The rebase cannot be trusted: plan the heal again on the remote's new head."""


class PushRaceLost(TransientError):
    """The remote kept moving for the whole race budget: a retryable failure, not retried here."""


@dataclass
class Race:
    """One heal's race against the remote: its deadline and the pushes it lost so far."""

    budget_s: float
    deadline: float
    lost: int = 0

    def replan(self, why: Replan) -> None:
        """Go on with a plan on the new head, or raise `PushRaceLost` once the budget is spent."""
        if time.monotonic() >= self.deadline:
            raise self.give_up(why)
        log.info("push_race_replan", reason=str(why), pushes_lost=self.lost)

    def give_up(self, last: Exception) -> PushRaceLost:
        return PushRaceLost(
            f"the remote kept moving for the {self.budget_s:g} s push race budget "
            f"({self.lost} pushes rejected); last: {last}"
        )


class PushRacer:
    """Pushes a checkout's heal commit to its branch until it lands or the budget is spent."""

    def __init__(self, checkout: Checkout, budget_s: float, jitter_s: float = JITTER_S) -> None:
        self.checkout, self.budget_s, self.jitter_s = checkout, budget_s, jitter_s

    def start(self) -> Race:
        """The race of one heal (or batch), its budget counted from now."""
        return Race(self.budget_s, time.monotonic() + self.budget_s)

    async def push(
        self, race: Race, base: str, changes: list[Change], check: Callable[[], None]
    ) -> str:
        """Push HEAD, the heal commit on `base`, to the branch; the commit that landed.

        `check` runs before every push (the path locks are still held). Raises `Replan` when
        the heal must be planned again on the new head, `PushRaceLost` when the budget is spent.
        """
        co = self.checkout
        while True:
            check()
            try:
                return await self._land()
            except TransientError as exc:
                if not _MOVED.search(str(exc)):
                    raise
                race.lost += 1
                if time.monotonic() >= race.deadline:
                    raise race.give_up(exc) from None
            log.info("push_raced", pushes_lost=race.lost)
            await asyncio.sleep(random.uniform(0, self.jitter_s))  # noqa: S311 (not crypto)
            base = await in_thread(rebase, co, base, changes)

    async def _land(self) -> str:
        """Push HEAD once; the commit that landed (see `landing`)."""
        co = self.checkout

        def push() -> str:
            co.push(co.branch)
            return co.head()

        return await landing(push, "commit")


async def landing(push: Callable[[], T], what: str) -> T:
    """`push()` in a thread, its result once it has landed. Cut off meanwhile (the agent
    stops), the push under way still ends (`in_thread`), and if it landed the heal goes on as
    if never cut off: cut off, it would land unrecorded and its redelivery find it "already
    healthy" (or its heal branch "already proposed"). `what` names the result in the log."""
    landed: list[T] = []
    try:
        await in_thread(lambda: landed.append(push()))
    except asyncio.CancelledError:
        if not landed:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        log.warning("push_landed_while_cut_off", **{what: landed[0]})
    return landed[0]


def rebase(co: Checkout, base: str, changes: list[Change]) -> str:
    """Fetch, rebase the heal commit(s) on `base` onto the remote's new head and re-check the
    heal there; the new head. `Replan` if the new commits touch the heal or the rebase fails."""
    co.fetch()
    head = co.git("rev-parse", f"{co.remote}/{co.branch}")
    ours = [p for c in changes for p in c.paths()]
    moved = co.git("diff", "--name-only", "--no-renames", "-z", base, head).split("\0")
    touched = sorted(with_parents(p for p in moved if p).intersection(ours))
    if touched:
        raise Replan(f"the remote's new commits changed {', '.join(touched[:3])}")
    healed = _listing(co, "HEAD", ours)
    try:
        _replay(co, base, head)
    except (TransientError, HealFailed) as exc:
        with contextlib.suppress(TransientError, HealFailed):
            co.git("rebase", "--abort")
        raise Replan(f"the rebase onto {head[:12]} failed: {exc}") from None
    if _listing(co, "HEAD", ours) != healed:  # the heal, re-checked against the new head
        raise Replan(f"the heal does not hold on {head[:12]}")
    return head


def _replay(co: Checkout, base: str, head: str) -> None:
    """Move the heal commit(s) on `base` onto `head`. One commit on a base `head` descends from
    (a burst's batch, a heal) is made again from the merge of the two trees, and the checkout
    moved to it file by file: ~30 ms where `git rebase` takes ~120 ms against a 1,000-directory
    tree, and a shorter fetch-to-push window is what wins against a teammate pushing every
    200 ms. Anything else is left to `git rebase`. Raises on a conflict. Unlike a rebase, the
    moved commit gets a new author date."""
    who = co.identity
    ident = [*("-c", f"user.name={who.name}", "-c", f"user.email={who.email}")]
    ident += ["-c", "commit.gpgsign=false"]
    if head == base:  # refused without the remote moving (a lock on it): nothing to move
        return
    ours = co.head()
    single = co.git("rev-list", "--count", f"{base}..{ours}") == "1"
    if not single or not _descends(co, base, head):
        co.git(*ident, "rebase", "-q", "--onto", head, base)
        return
    tree = co.git("merge-tree", "--write-tree", "--no-messages", ours, head).splitlines()[0]
    message = co.git("cat-file", "commit", ours).split("\n\n", 1)[1]  # as stored: no re-encoding
    moved = co.git(*ident, "commit-tree", tree, "-p", head, "-m", message)
    co.git("update-index", "-q", "--refresh")  # a file touched but unchanged is no change
    co.git("read-tree", "-m", "-u", ours, moved)  # the new head's files; ours untouched
    co.git(
        "update-ref", "-m", "auto-healer: heal moved onto the remote's head", "HEAD", moved, ours
    )


def _descends(co: Checkout, base: str, head: str) -> bool:
    """`head` has `base` in its history (the remote moved forward, not rewritten)."""
    try:
        co.git("merge-base", "--is-ancestor", base, head)
    except (TransientError, HealFailed):
        return False
    return True


def _listing(co: Checkout, rev: str, paths: list[str]) -> str:
    """Every file at or under `paths` in `rev`, with its mode and blob."""
    return co.git("--literal-pathspecs", "ls-tree", "-r", "-z", rev, "--", *paths) if paths else ""


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """Run blocking git work in a thread; if cancelled, wait for the thread before unwinding,
    so the restore that follows never races a push still under way."""
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
