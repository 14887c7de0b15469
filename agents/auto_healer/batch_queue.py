"""The queue of one checkout's heals, and the order its batches go through it.

One driver task takes the queue a batch at a time. Each batch runs in its own task: it takes
its path locks and reads its healed ids, then waits for the checkout, syncs, plans, applies,
commits and pushes. The next batch is taken once the batch ahead has reached its commit
(`committing`) when a full batch waits or nothing joined the queue meanwhile, else once the
batch ahead has ended (a queue still filling up would give a small batch). Its locks and
healed-id reads then overlap the commit and push of the batch ahead; it touches the checkout
only once the batch ahead has let go of it (after its push, or after the restore of a failed
one). With no batch under way, the first is taken once the burst has arrived (`_linger`: a
few milliseconds of quiet, 50 ms at most), not with the one injury that came first.

A batch never waits for a lock the batch ahead holds: an injury on a path the batch ahead
holds waits in the queue for a batch taken after that one has ended. Every lock is taken path
locks first, then the checkout (`Healer._heal` too): no heal waits for a path lock while it
holds the checkout, so a batch holding its locks while it waits for the checkout cannot
deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from auto_healer.batch_ahead import Item
from auto_healer.outcomes import Outcome

FIRST = asyncio.FIRST_COMPLETED
QUIET_S = 0.005  # a burst's injuries arrive well within this of each other
LINGER_S = 0.05  # the longest the first batch of a burst waits for it to arrive


@dataclass(eq=False)
class Stage:
    """One batch on its way through: its injuries, and how far it has got."""

    items: list[Item]
    committing: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: asyncio.Task[None] | None = None
    cut: set[Item] = field(default_factory=set)  # its heals cut off (the agent stops)
    landed: bool = False  # its push landed: it is never cut off, so what landed is recorded

    @property
    def keys(self) -> set[str]:
        return {it.lock_key for it in self.items}

    def reached_commit(self) -> None:
        """The batch has applied what it heals (or ended): the next batch may be taken."""
        if not self.committing.done():
            self.committing.set_result(None)


RunStage = Callable[[Stage], Awaitable[dict[Item, Outcome]]]


class BatchQueue:
    """Injuries queued for one checkout, taken `max_batch` at a time by one driver task."""

    def __init__(self, run: RunStage, max_batch: int) -> None:
        self._run, self.max_batch = run, max_batch
        self._queue: deque[Item] = deque()
        self._driver: asyncio.Task[None] | None = None
        self._stages: list[Stage] = []  # taken and not ended, oldest first
        self._of: dict[Item, Stage] = {}
        self._grew: asyncio.Future[None] | None = None  # set when an injury joins the queue
        self._since = 0.0  # when the queue, empty, was joined (the loop's clock)

    async def heal(self, item: Item) -> Outcome:
        """Queue one injury and return its outcome once the batch that took it has ended."""
        if not self._queue:
            self._since = asyncio.get_running_loop().time()  # the oldest waiting joined
        self._queue.append(item)
        if self._grew is not None and not self._grew.done():
            self._grew.set_result(None)
        try:
            await asyncio.sleep(0)  # injuries submitted together join the queue first
            if self._driver is None:
                # A context of its own: the driver outlives the heal that started it.
                self._driver = asyncio.create_task(self._drive(), context=contextvars.Context())
            return await asyncio.shield(item.future)
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._queue.remove(item)
            stage = self._of.get(item)
            if stage is None or stage.task is None:
                item.future.cancel()  # no batch has taken it: none will
                raise
            return await self._cut_off(item, stage, stage.task)

    async def _cut_off(self, item: Item, stage: Stage, task: asyncio.Task[None]) -> Outcome:
        """A heal cut off in a batch under way. Once every heal of the batch is, so is the
        batch (restoring the checkout), unless its push has landed. The heal waits for the
        batch to end: what landed is answered (its delivery settled, its event sent), what did
        not is cut off (`CancelledError`)."""
        stage.cut.add(item)
        if not stage.landed and all(i in stage.cut or i.future.done() for i in stage.items):
            task.cancel()
        await asyncio.wait([task])
        if stage in self._stages:  # cancelled before its first step: its `finally` never ran
            self._ended(stage, {}, None)
        if item.future.done() and not item.future.cancelled() and not item.future.exception():
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return item.future.result()
        item.future.cancel()
        raise asyncio.CancelledError

    def _take(self) -> list[Item]:
        """The next batch: queued injuries not on a path a batch under way holds."""
        busy = set().union(*(s.keys for s in self._stages))
        batch: list[Item] = []
        kept: list[Item] = []
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.future.done():
                continue
            (kept if item.lock_key in busy else batch).append(item)
        self._queue.extendleft(reversed(kept))
        return batch

    async def _drive(self) -> None:
        try:
            while True:
                if not self._stages:
                    await self._linger()
                batch = self._take()
                if not batch:
                    if not any(not it.future.done() for it in self._queue):
                        return
                    # all on paths held by a batch under way: wait for it to end
                    running = [t for s in self._stages if (t := s.task)]
                    await asyncio.wait(running, return_when=FIRST)
                    continue
                stage = Stage(batch)
                self._stages.append(stage)
                self._of.update(dict.fromkeys(batch, stage))
                stage.task = asyncio.create_task(self._stage(stage))
                left = len(self._queue)
                await asyncio.wait([stage.committing])
                # Taken early when full, or when nothing joined since this batch was taken (the
                # burst is all in): a queue still filling up would give a small batch.
                while not (self.max_batch <= len(self._queue) or 0 < len(self._queue) == left):
                    if stage.task.done():
                        break
                    self._grew = asyncio.get_running_loop().create_future()
                    await asyncio.wait([stage.task, self._grew], return_when=FIRST)
        finally:
            self._driver = None

    async def _linger(self) -> None:
        """With no batch under way, wait for the burst an injury may open: until the queue is
        full, or nothing joined it for `QUIET_S`, or `LINGER_S` have passed since the oldest
        waiting injury joined (a steady trickle is not held a linger per batch). A lone injury
        waits `QUIET_S`; the first batch of an audit's burst is then a whole batch, not a batch
        of the one injury that arrived first (a commit and a push more)."""
        loop = asyncio.get_running_loop()
        deadline = self._since + LINGER_S
        while len(self._queue) < self.max_batch:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._grew = loop.create_future()
            joined, _ = await asyncio.wait([self._grew], timeout=min(QUIET_S, left))
            if not joined:
                return

    async def _stage(self, stage: Stage) -> None:
        """Run a batch and answer every injury of it, or hand back those it did not reach."""
        outcomes: dict[Item, Outcome] = {}
        failed: BaseException | None = None
        try:
            outcomes = await self._run(stage)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: each of its injuries is told, none is lost
            failed = exc
        finally:
            self._ended(stage, outcomes, failed)
        if self._queue and self._driver is None:  # handed back with no driver left to take it
            self._driver = asyncio.create_task(self._drive(), context=contextvars.Context())

    def _ended(
        self, stage: Stage, outcomes: dict[Item, Outcome], failed: BaseException | None
    ) -> None:
        """Let go of a batch: answer its injuries, hand back those it did not reach."""
        self._stages.remove(stage)
        for it in stage.items:
            self._of.pop(it, None)
        stage.reached_commit()
        for it in stage.cut.difference(outcomes):
            it.future.cancel()  # cut off and not reached: never handed back
        left = [it for it in stage.items if it not in outcomes and not it.future.done()]
        if failed is None:
            self._queue.extendleft(reversed(left))  # cut off or over the file cap
        else:
            for it in left:
                it.future.set_exception(failed)
        for it, outcome in outcomes.items():
            if not it.future.done():
                it.future.set_result(outcome)
