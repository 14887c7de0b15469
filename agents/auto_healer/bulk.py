"""The agent's batch path: what arrived together is taken together.

A source submits deliveries one by one; they gather in an inbox until the event loop turns,
then are taken as one batch. Each delivery is admitted, and what is known without waiting
(`inline.outcome_now`: nothing claims it, refused, a dry-run plan) is decided by `decide()`,
one delivery at a time as ever; unless a page or dead letter is due, its event and settlement
go out with the rest of the batch (one write to the connection). The rest runs the whole way
(`_process`) as a task in a slot, `MAX_IN_FLIGHT` at once: a heal never holds up the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any

import structlog

from auto_healer.admission import Admitted, Gate, Rejection
from auto_healer.decision import Context, Decision, decide
from auto_healer.effects import Effects
from auto_healer.guard import Guard
from auto_healer.healer import Healer
from auto_healer.inline import outcome_now
from auto_healer.metrics import Metrics
from auto_healer.outcomes import Kind, Outcome
from auto_healer.sources import Delivery, Slots

log = structlog.get_logger("auto_healer.agent")
BATCH = 256  # deliveries taken at once at most (what a batch holds is alive together)


class Batches:
    """Intake in batches, and the tasks in flight (the agent's base)."""

    gate: Gate
    healer: Healer
    guard: Guard | None
    effects: Effects
    metrics: Metrics
    slots: Slots
    stopping: asyncio.Event
    dry_run: bool
    # heals waiting for a slot on core NATS (and deliveries not yet taken), then the source waits
    max_queued_heals: int = 10_000
    max_queued_heal_bytes: int = 256 * 1024 * 1024

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbox: deque[Delivery] = deque()  # submitted, not yet taken
        self._taker: asyncio.Task[None] | None = None
        self._waiting: deque[tuple[Delivery, list[Admitted]]] = deque()  # heals without a slot
        self._feeder: asyncio.Task[None] | None = None
        self._core_seen = False  # a delivery that is never redelivered (core NATS) came
        self._core: Context | None = None  # the context of such a delivery
        self._queued_n = self._queued_bytes = 0  # deliveries in the inbox or the batch taken,
        # and heals waiting for a slot, held in memory

    async def _process(self, delivery: Delivery, admitted: list[Admitted] | None = None) -> None:
        """The whole way for one delivery (the agent's)."""
        raise NotImplementedError

    def _spawn(self, delivery: Delivery) -> None:
        """Take a delivery: with whatever else arrives before the loop turns, as one batch."""
        self._inbox.append(delivery)
        self._queued(1, len(delivery.data))
        if self._taker is None:
            self._taker = self._track(self._take(), release=0)

    def _track(self, work: Coroutine[Any, Any, None], *, release: int) -> asyncio.Task[None]:
        """Run `work` in flight; `release` slots are released when it is done."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        self.metrics.in_flight.set(len(self._tasks))

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self.slots.release(release)
            self.metrics.in_flight.set(len(self._tasks))
            if not self._tasks and not self._waiting and self._core_seen:
                self.metrics.caught_up()  # core NATS: nothing in flight, nothing waits for us

        task.add_done_callback(done)
        return task

    async def _take(self) -> None:
        try:
            inbox = self._inbox
            while inbox:
                batch = [inbox.popleft() for _ in range(min(len(inbox), BATCH))]
                try:
                    await self._take_batch(batch)
                finally:
                    self._queued(-len(batch), -sum(len(d.data) for d in batch))
        finally:
            self._taker = None

    async def _take_batch(self, batch: list[Delivery]) -> None:
        """Decide each delivery of a batch (`decide()` for each), spawn what must wait, then
        announce and settle the rest together."""
        # The transport's own time (JetStream's stream time, or our receive time) of the oldest:
        # a payload's timestamp may be any clock and is never used for lag.
        self.metrics.observe_lag(batch[0].received_at)
        now: list[tuple[Outcome, Delivery, Decision]] = []
        started = time.monotonic()
        for delivery in batch:
            self._core_seen = self._core_seen or delivery.max_attempts is None
            envelope: list[Outcome] | None = None
            try:
                admitted = self.gate.admit(delivery)
                outcome = self._outcome_now(admitted, delivery)
                decision = None if outcome is None else decide(outcome, self._context(delivery))
                if len(admitted) > 1:
                    envelope = self._envelope_now(admitted, delivery)
            except Exception:  # a bug must never kill the agent; the whole way reports it
                outcome = decision = envelope = None
                admitted = []
            if envelope is not None:  # needs no checkout: never waits behind heals for a slot
                self._track(self._carry_out_all(envelope, delivery), release=delivery.slotted)
            elif outcome is None or decision is None:
                self._later(delivery, admitted or None)
            elif self.effects.waits(decision):
                self._track(self._carry_out(outcome, delivery, decision), release=delivery.slotted)
            else:
                now.append((outcome, delivery, decision))
        await self.effects.carry_out_now(now)
        took = time.monotonic() - started
        counts = Counter((o.kind.value, o.playbook or "none") for o, _d, _dec in now)
        for (kind, playbook), count in counts.items():
            self.metrics.injuries.labels(outcome=kind, playbook=playbook).inc(count)
            seconds = self.metrics.heal_seconds.labels(playbook=playbook)
            for _ in range(count):
                seconds.observe(took)
        self.slots.release(sum(d.slotted for _o, d, _dec in now))
        log.info("batch_taken", size=len(batch), answered=len(now))

    def _later(self, delivery: Delivery, admitted: list[Admitted] | None) -> None:
        """The whole way, as a task in a slot (taken here when the source reserved none)."""
        if delivery.slotted:
            self._track(self._process(delivery, admitted), release=1)
            return
        self._waiting.append((delivery, admitted or []))
        self._queued(1, len(delivery.data))
        if self._feeder is None:
            self._feeder = asyncio.create_task(self._feed())

    async def _feed(self) -> None:
        """Start the heals waiting for a slot, in order, as slots come free."""
        try:
            while self._waiting:
                await self.slots.reserve()
                delivery, admitted = self._waiting.popleft()
                self._queued(-1, -len(delivery.data))
                self._track(self._process(delivery, admitted or None), release=1)
        finally:
            self._feeder = None

    def _queued(self, count: int, size: int) -> None:
        """Count what is queued in memory; the source is held while it is over the limits."""
        self._queued_n += count
        self._queued_bytes += size
        full = (
            self._queued_n >= self.max_queued_heals
            or self._queued_bytes >= self.max_queued_heal_bytes
        )
        self.slots.hold(full and not self.stopping.is_set())

    def _outcome_now(self, admitted: list[Admitted], delivery: Delivery) -> Outcome | None:
        if len(admitted) != 1:
            return None  # an envelope: settled once, for all its entries
        if isinstance(admitted[0], Rejection):
            return self._rejected(admitted[0], delivery)
        return outcome_now(self.healer, admitted[0], guarded=self.guard is not None)

    def _envelope_now(self, admitted: list[Admitted], delivery: Delivery) -> list[Outcome] | None:
        """Every entry's outcome of an envelope (the real bee-keeper's), if all are known now."""
        outcomes = []
        for entry in admitted:
            if isinstance(entry, Rejection):
                outcome: Outcome | None = self._rejected(entry, delivery)
            else:
                outcome = outcome_now(self.healer, entry, guarded=self.guard is not None)
            if outcome is None:
                return None
            outcomes.append(outcome)
        return outcomes

    async def _carry_out_all(self, outcomes: list[Outcome], delivery: Delivery) -> None:
        started = time.monotonic()
        context = Context(dry_run=self.dry_run, pager=self.effects.pager is not None)
        decisions = [decide(o, context) for o in outcomes]
        await self.effects.carry_out_all(outcomes, delivery, decisions)
        for outcome in outcomes:
            self._observe(outcome, started)

    async def _carry_out(self, outcome: Outcome, delivery: Delivery, decision: Decision) -> None:
        started = time.monotonic()
        await self.effects.carry_out(outcome, delivery, decision)
        self._observe(outcome, started)

    def _context(self, delivery: Delivery, *, heal_attempts: int | None = None) -> Context:
        if delivery.max_attempts is None and delivery.attempt == 1 and heal_attempts is None:
            return self._core_context()  # never redelivered: every such delivery's is the same
        return Context(
            redeliverable=delivery.redeliverable,
            last_attempt=delivery.last_attempt,
            attempt=delivery.attempt,
            heal_attempts=heal_attempts,
            heal_budget=delivery.max_attempts or 0,
            dry_run=self.dry_run,
            pager=self.effects.pager is not None,
        )

    def _core_context(self) -> Context:
        pager = self.effects.pager is not None
        cached = self._core
        if cached is None or cached.pager != pager or cached.dry_run != self.dry_run:
            cached = self._core = Context(dry_run=self.dry_run, pager=pager)
        return cached

    def _rejected(self, rejection: Rejection, delivery: Delivery) -> Outcome:
        log.warning(
            "injury_rejected",
            injury_id=rejection.injury_id,
            subject=delivery.subject,
            reason=rejection.reason[:500],
            size=len(delivery.data),
        )
        return Outcome(
            Kind.REJECTED,
            rejection.reason,
            raw=delivery.data,
            raw_id=rejection.injury_id,
            dry_run=self.dry_run,
        )

    def _observe(self, outcome: Outcome, started: float) -> None:
        playbook = outcome.playbook or "none"
        self.metrics.injuries.labels(outcome=outcome.kind.value, playbook=playbook).inc()
        self.metrics.heal_seconds.labels(playbook=playbook).observe(time.monotonic() - started)
