"""Coalesced heals: injuries that queue behind a heal are healed together, in one commit.

`Batcher.heal()` is called once per injury and returns its own outcome. The queue is taken a
batch at a time (`batch_queue`: up to `max_batch` injuries, `max_files` files), the next batch's
path locks and healed-id reads overlapping the commit and push of the batch ahead; under the
checkout each batch gets one sync,
each injury planned and applied in turn (one refused, escalated or with nothing to do is left
out with its own outcome), one commit with every `Injury-Id:` trailer, one push. Healed outcomes
are answered only after the push. A push race is won by `pushrace`: the commit is rebased onto the
new head and pushed again, or the batch planned again on the new head, within the race budget.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog
from tenacity import RetryCallState, retry_if_exception_type, retry_if_not_exception_type

from auto_healer.batch_ahead import Ahead, Item, as_twin, plan, stage_and_commit, waited_out
from auto_healer.batch_queue import BatchQueue, Stage
from auto_healer.batch_throttle import decide, let_go_failed
from auto_healer.checkout import Checkout
from auto_healer.contracts import ParsedInjury
from auto_healer.coordination import Coordinator, Lease
from auto_healer.errors import (
    ConfigError,
    CoordinationUnavailable,
    HealFailed,
    InjuryRejected,
    TransientError,
)
from auto_healer.outcomes import Kind, Outcome
from auto_healer.pathlocks import hold_all
from auto_healer.playbooks import Playbook
from auto_healer.pushrace import Change, PushRaceLost, PushRacer, Replan, in_thread

log = structlog.get_logger("auto_healer.healer")
Settle = Callable[[Item, Outcome], Awaitable[Outcome]]  # verify a heal, record its healed id
INLINE_FILES = 20  # a plan this small is applied on the event loop, not in a thread
UNTRACKED_ONLY = "only untracked files differed; removed them locally, nothing to commit"


@dataclass
class _Refused(Exception):
    """An injury refused while it was being applied: the batch is rebuilt without it."""

    item: Item
    outcome: Outcome


class Batcher:
    """The queue of one checkout's heals, and the batch heal of what it holds."""

    def __init__(
        self,
        checkout: Checkout,
        coordinator: Coordinator,
        lock: asyncio.Lock,
        outcome: Callable[..., Outcome],
        settle: Settle,
        *,
        max_batch: int,
        max_files: int,
    ) -> None:
        self.checkout, self.coordinator, self.lock = checkout, coordinator, lock
        self._outcome, self._settle = outcome, settle
        self.max_batch, self.max_files = max_batch, max_files
        self._queue = BatchQueue(self._locked, max_batch)
        self._stage: Stage | None = None  # the batch holding the checkout
        self._leases: list[Lease] = []  # the path locks of the batch being healed
        self.racer = PushRacer(checkout, checkout.push_race_budget_s)
        self._race = self.racer.start()  # the push race of the batch being healed
        self._pushed: tuple[float, str] | None = None  # when our last push began, what landed

    async def heal(
        self, parsed: ParsedInjury, playbook: Playbook, lock_key: str, window: str | None = None
    ) -> Outcome:
        """Queue one injury and return its outcome once the batch that took it has ended.
        `window`: its throttle window's key, claimed under the path lock (`batch_throttle`)."""
        future = asyncio.get_running_loop().create_future()
        return await self._queue.heal(Item(parsed, playbook, lock_key, future, window=window))

    async def _locked(self, stage: Stage) -> dict[Item, Outcome]:
        """Take the path lock of every injury (all at once, see `pathlocks`), read their
        healed ids and claim their throttle windows, then heal those neither failed, healed
        already nor throttled under the checkout; let go of the locks at the end. The batch
        ahead may still hold the checkout meanwhile."""
        batch = stage.items
        claimed: list[Item] = []  # the items that claimed their throttle window
        async with hold_all(self.coordinator, [it.lock_key for it in batch]) as held:
            outcomes = {
                it: self._unlocked(it, held.failed[it.lock_key])
                for it in batch
                if it.lock_key in held.failed
            }
            live = [it for it in batch if it not in outcomes]
            if not live:
                return outcomes
            leases = list(held.leases.values())
            locked_at = time.monotonic()
            ahead = self.lock.locked()
            if ahead:  # the batch ahead commits: read the healed ids meanwhile
                outcomes.update(await self._decide(live, claimed))
                live = [it for it in live if it not in outcomes]
                if not live:
                    return outcomes
            async with self.lock:
                synced = asyncio.ensure_future(in_thread(self._sync, locked_at))
                # else the first sync runs while the healed ids are read
                read = None if ahead else claimed
                outcomes.update(await self._healed(stage, live, leases, synced, read=read))
            # The checkout is the next batch's now; the heals are verified and their ids
            # recorded (their windows let go if they did not hold) before the locks are let
            # go, so whoever takes a path next sees them.
            settled = await asyncio.gather(*(self._settle(it, o) for it, o in outcomes.items()))
            outcomes = dict(zip(outcomes, settled, strict=True))
            await let_go_failed(self.coordinator, claimed, outcomes)
        if len(batch) > 1:
            kinds = Counter(o.kind.value for o in outcomes.values())
            log.info("batch_done", injuries=len(batch), **kinds)
        return outcomes

    async def _healed(
        self,
        stage: Stage,
        live: list[Item],
        leases: list[Lease],
        synced: asyncio.Future[str],
        *,
        read: list[Item] | None,
    ) -> dict[Item, Outcome]:
        """The batch under the checkout, its sync `synced` started with the locks held (and
        its healed ids read and windows claimed beside it, into `read`, unless None)."""
        self._stage, self._leases = stage, leases
        outcomes: dict[Item, Outcome] = {}
        try:
            if read is not None:
                outcomes.update(await self._decide(live, read))
                live = [it for it in live if it not in outcomes]
            if live:
                outcomes.update(await self._attempts(live, synced))
        finally:
            stage.reached_commit()
            self._stage = None
            await waited_out(synced)
        return outcomes

    def _sync(self, locked_at: float) -> str:
        """The base of a batch whose locks were all held at `locked_at`: our own last push,
        without a fetch, when those locks were held before it began and the clone is still
        clean at it (another replica's push under any of them landed before they were ours,
        so before our push, which fast-forwarded over it); else a full sync."""
        pushed = self._pushed
        if pushed is not None and locked_at < pushed[0] and self.checkout.at_own_push(pushed[1]):
            return pushed[1]
        return self.checkout.sync()

    async def _decide(self, items: list[Item], held: list[Item]) -> dict[Item, Outcome]:
        """Injuries healed by another delivery while these waited for the locks, or throttled
        (`batch_throttle`); those that claimed their window join `held`."""
        outcomes, claimed = await decide(self.coordinator, items, self._out)
        held.extend(claimed)
        return outcomes

    async def _attempts(
        self, items: list[Item], synced: asyncio.Future[str]
    ) -> dict[Item, Outcome]:
        """The batch with retries of transient failures, each on the remote's new head (the
        first on `synced`, the sync started with the locks held)."""
        final: dict[Item, Outcome] = {}  # left out of the batch, for good
        patient = max((it.playbook for it in items), key=lambda p: p.retry.attempts)
        retrying = patient.retry.retrying(
            retry_if_exception_type(TransientError) & retry_if_not_exception_type(PushRaceLost),
            before_sleep=lambda rs: log.warning(
                "heal_retry", attempt=rs.attempt_number, injuries=len(items), error=_error(rs)
            ),
        )
        attempts = 0

        def rest(kind: Kind, reason: str, **more: Any) -> dict[Item, Outcome]:
            out = {it: self._out(it, kind, reason, attempts=attempts, **more) for it in items}
            return out | final

        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    first = synced if attempts == 1 else None
                    healed = await self._attempt(items, final, attempts, first)
        except TransientError as exc:
            return rest(Kind.FAILED, f"{exc} (after {attempts} attempts)", retryable=True)
        except (HealFailed, ConfigError, InjuryRejected) as exc:
            return rest(Kind.FAILED, str(exc))
        except Exception as exc:  # a bug must not kill the agent; it is reported and paged
            log.exception("heal_internal_error", injuries=len(items))
            return rest(Kind.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        return final | healed

    async def _attempt(
        self,
        items: list[Item],
        final: dict[Item, Outcome],
        attempt: int,
        synced: asyncio.Future[str] | None = None,
    ) -> dict[Item, Outcome]:
        """One try: sync (or the sync already under way), plan and apply each injury, one
        commit, one push (planned again on the remote's new head while the push race asks for
        it and its budget lasts)."""
        co = self.checkout
        self._race = race = self.racer.start()
        while True:
            if synced is not None:
                base, synced = await synced, None
            else:
                base = await in_thread(co.sync)
            try:
                while True:
                    try:
                        return await self._build(items, final, base, attempt)
                    except _Refused as refused:  # rebuild from the base without it
                        final[refused.item] = refused.outcome
                        await in_thread(co.restore, base)
            except Replan as why:
                await in_thread(co.restore, base)
                race.replan(why)
            except BaseException:
                await in_thread(co.restore, base)
                raise

    async def _build(
        self, items: list[Item], final: dict[Item, Outcome], base: str, attempt: int
    ) -> dict[Item, Outcome]:
        included: list[Item] = []
        twins: list[tuple[Item, Item]] = []  # a second delivery of an injury in the batch
        by_id: dict[str, Item] = {}
        ahead = Ahead[Item]()  # planned and not applied yet: deletions, on paths apart
        files = 0
        for it in items:
            if it in final:
                continue
            if it.parsed.id in by_id:
                twins.append((it, by_id[it.parsed.id]))
                continue
            if ahead.items and not ahead.apart(it):
                await self._apply(ahead.take(), attempt)  # its plan must see them applied
            left_out = await plan(it, self.checkout.root, self._out)
            if left_out is not None:
                final[it] = replace(left_out, attempts=attempt)
                continue
            if included and files + it.files > self.max_files:
                break  # it and the rest wait for the next batch
            files += it.files
            included.append(it)
            by_id[it.parsed.id] = it
            ahead.add(it)
            if it.write:
                await self._apply(ahead.take(), attempt)
        await self._apply(ahead.take(), attempt)
        healed = await self._commit(included, final, base, attempt)
        for twin, first in twins:
            done = healed.get(first) or final.get(first)
            if done is not None:
                healed[twin] = as_twin(done, twin.parsed)
        return healed

    async def _apply(self, group: list[Item], attempt: int) -> None:
        """Apply planned injuries in order; the first refused one is handed back as `_Refused`.
        A small plan is applied on the loop: in a thread it would wait for the busy loop's GIL
        after every system call."""
        co = self.checkout
        for it in group:
            globs = it.playbook.protected_globs
            try:
                if it.files > INLINE_FILES:
                    await in_thread(co.apply_files, it.delete, it.write, globs)
                else:
                    co.apply_files(it.delete, it.write, globs)
            except (InjuryRejected, HealFailed) as exc:
                kind = Kind.REJECTED if isinstance(exc, InjuryRejected) else Kind.FAILED
                raise _Refused(it, self._out(it, kind, str(exc), attempts=attempt)) from None

    async def _commit(
        self, included: list[Item], final: dict[Item, Outcome], base: str, attempt: int
    ) -> dict[Item, Outcome]:
        """Stage everything at once, commit what changed tracked files, push."""
        co = self.checkout
        if self._stage is not None:
            self._stage.reached_commit()  # the next batch may take its locks meanwhile
        if not included:
            return {}
        skipped: list[Item] = []  # known before the commit: skipped even if the commit fails
        try:
            sha, committed, messages = await in_thread(
                stage_and_commit, self.checkout, included, skipped
            )
        finally:
            for it in skipped:
                final[it] = self._out(it, Kind.SKIPPED, UNTRACKED_ONLY, attempts=attempt)
        if sha is None:
            await in_thread(co.restore, base)
            return {}
        changes = [Change(tuple(it.delete), it.write) for it in committed]
        started = time.monotonic()
        sha = await self.racer.push(self._race, base, changes, self._check_leases)
        if self._stage is not None:
            self._stage.landed = True  # never cut off now: its heals are recorded and answered
        co.pushed_clean(sha)
        self._pushed = (started, sha)
        why = f"pushed {sha[:12]} to {co.branch}"
        why += f" (one commit for {len(committed)} injuries)" if len(committed) > 1 else ""
        done = {"commit": sha, "branch": co.branch, "attempts": attempt + self._race.lost}
        return {
            it: self._out(it, Kind.HEALED, why, commit_message=message, **done)
            for it, message in zip(committed, messages, strict=True)
        }

    def _unlocked(self, it: Item, exc: TransientError) -> Outcome:
        """A path lock not taken: no heal was tried, and a store that did not answer is an
        outage, not an attempt (`decision`: it comes back whatever its budget says)."""
        down = isinstance(exc, CoordinationUnavailable)
        return self._out(it, Kind.FAILED, str(exc), retryable=True, store_unavailable=down)

    def _check_leases(self) -> None:
        for lease in self._leases:
            lease.check()  # never push without every path lock

    def _out(self, it: Item, kind: Kind, reason: str, **fields: Any) -> Outcome:
        return self._outcome(it.parsed, it.playbook, kind, reason, steps=it.reports, **fields)


def _error(state: RetryCallState) -> str | None:
    return str(state.outcome.exception()) if state.outcome else None
