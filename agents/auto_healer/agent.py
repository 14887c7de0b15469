"""The cluster agent: deliveries from a source through one pipeline, decisions carried out.

The agent knows no transport: a `Source` (core NATS, JetStream, or a fake in tests) submits
`Delivery`s; each goes through one pipeline:

    admit (signature, contract) → heal → decide() → page → dead letter → event → settle

What arrived together is taken as a batch (`_take`): each delivery is admitted, and what is
known without waiting (`inline.outcome_now`: no playbook, refused, a dry-run plan) is decided
and, unless a page or dead letter is due, announced and settled with the rest of the batch.
The others run as tasks, `MAX_IN_FLIGHT` at once, each in a slot (the healer still heals one
at a time per checkout); a heal never holds up the batch path. On
SIGTERM/SIGINT intake stops at once and in-flight heals get the grace period. A connection
closed for good, or down too long, fails `/healthz` and makes `run()` raise `LinkLost`, so the
process exits non-zero and is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from auto_healer.admission import Admitted, Gate, Rejection, body_id
from auto_healer.bulk import Batches
from auto_healer.decision import Context, decide, nak_delay_s
from auto_healer.effects import Effects
from auto_healer.errors import LinkLost, TransientError
from auto_healer.guard import Guard
from auto_healer.healer import Healer
from auto_healer.heartbeat import Heart
from auto_healer.liveness import Liveness
from auto_healer.logs import bound
from auto_healer.metrics import HealthServer, Metrics, WsgiApp
from auto_healer.outcomes import Kind, Outcome
from auto_healer.sources import Delivery, Slots, Source

log = structlog.get_logger("auto_healer.agent")
DRAIN_TIMEOUT_S = 10.0
WAIT_WORD_S = 5.0  # while cut-off heals still run at shutdown, said this often


class Link(Protocol):
    """The connection the agent reports on and drains at the end."""

    @property
    def is_connected(self) -> bool: ...

    async def drain(self) -> None: ...


class Agent(Batches):
    """One replica: takes deliveries, heals with bounded concurrency, stops cleanly."""

    def __init__(
        self,
        *,
        source: Source,
        healer: Healer,
        effects: Effects,
        gate: Gate,
        link: Link,
        liveness: Liveness,
        metrics: Metrics,
        max_in_flight: int,
        grace_period_s: float,
        max_queued_heals: int = Batches.max_queued_heals,
        max_queued_heal_bytes: int = Batches.max_queued_heal_bytes,
        heart: Heart | None = None,
        guard: Guard | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        http_mounts: Mapping[str, WsgiApp] | None = None,
    ) -> None:
        self.source, self.healer, self.effects, self.gate = source, healer, effects, gate
        self.link, self.liveness, self.metrics, self.heart = link, liveness, metrics, heart
        self.guard = guard  # the operator controls (pause, breaker), asked before a heal
        self.dry_run = healer.dry_run
        self.grace_period_s = grace_period_s
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.http_mounts = http_mounts  # more apps on the metrics port (the console)
        self.slots = Slots(max_in_flight)
        self.max_queued_heals, self.max_queued_heal_bytes = max_queued_heals, max_queued_heal_bytes
        self.stopping = asyncio.Event()
        self.subscribed = False
        self.fatal: str | None = None
        super().__init__()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def ready(self) -> bool:
        return self.not_ready() is None

    def not_ready(self) -> str | None:
        """Why `/readyz` fails now (a degraded coordination store included), or None."""
        if self.stopping.is_set():
            return "not ready: stopping"
        if not self.link.is_connected:
            return "not ready: disconnected from NATS, reconnecting"
        if not self.subscribed:
            return "not ready: not subscribed yet"
        return self.healer.coordinator.degraded()

    def details(self) -> dict[str, Any]:
        """What the heartbeat says about this replica."""
        return {"in_flight": self.in_flight, "source": self.source.name, "dry_run": self.dry_run}

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or `stopping` is set), then drain and return.

        Raises `LinkLost` when the agent stopped because its connection is gone for good.
        """
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, self.stopping.set)
        health = None
        if self.metrics_port is not None:
            health = HealthServer(
                self.metrics,
                self.metrics_port,
                ready=self.ready,
                why_not_ready=self.not_ready,
                alive=self.liveness.alive,
                host=self.metrics_host,
                mounts=self.http_mounts,
            ).start()
            log.info("metrics_listening", port=health.port)
            if self.http_mounts and "/ui" in self.http_mounts:
                log.info("console_listening", url=f"http://{self.metrics_host}:{health.port}/ui")
        background = [asyncio.create_task(self._watch())]
        if self.heart is not None:
            background.append(asyncio.create_task(self.heart.run()))
        try:
            await self.source.start(self.slots, self._spawn, self.stopping)
            self.subscribed = True
            log.info(
                "agent_subscribed",
                source=self.source.name,
                dry_run=self.dry_run,
                **self.source.describe(),
            )
            await self.stopping.wait()
            log.info("agent_stopping", in_flight=self.in_flight, reason=self.fatal or "asked")
            await self.source.stop()
            await self._finish_in_flight()
            if self.heart is not None:
                await self.heart.beat("stopping")
        finally:
            for task in background:
                task.cancel()
            self.liveness.stopping()
            with contextlib.suppress(Exception):  # a drain must not hold the exit forever
                await asyncio.wait_for(self.link.drain(), timeout=DRAIN_TIMEOUT_S)
            if health is not None:
                health.stop()
            log.info("agent_stopped")
        if self.fatal:
            raise LinkLost(self.fatal)

    async def _watch(self) -> None:
        """Tick for `/healthz`; stop the agent when its connection is gone for good."""
        while True:
            self.liveness.tick()
            why = self.liveness.fatal()
            if why and not self.stopping.is_set():
                log.error("agent_unhealthy", reason=why)
                self.fatal = why
                self.stopping.set()
            await asyncio.sleep(1.0)

    async def _finish_in_flight(self) -> None:
        """Give in-flight heals the grace period; cut off the rest (they restore the checkout).
        Heals still waiting for a slot on core NATS are lost: said once, with their count."""
        if self._feeder is not None:
            self._feeder.cancel()
        if self._waiting:
            log.error("injury_cut_off", count=len(self._waiting), detail="never redelivered")
            self._queued(-len(self._waiting), -sum(len(d.data) for d, _a in self._waiting))
            self._waiting.clear()
        self.slots.hold(False)  # a source held by a full queue sees the stop
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self.grace_period_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("heals_cut_off", count=len(pending))
            waited = 0.0
            while pending:  # a cut-off heal still ends its git work (a push may yet land)
                _done, pending = await asyncio.wait(pending, timeout=WAIT_WORD_S)
                waited += WAIT_WORD_S
                if pending:
                    log.warning(
                        "waiting_for_cut_off_heals",
                        count=len(pending),
                        waited_s=waited,
                        detail="git work under way (a push) ends first, bounded by its "
                        "network timeout; what lands is answered",
                    )

    # --- the one pipeline -------------------------------------------------------------------

    async def _process(self, delivery: Delivery, admitted: list[Admitted] | None = None) -> None:
        started = time.monotonic()
        keeper = None
        if delivery.keepalive_s:
            keeper = asyncio.create_task(self._keep_in_progress(delivery, delivery.keepalive_s))
        try:
            with bound(subject=delivery.subject):
                admitted = self.gate.admit(delivery) if admitted is None else admitted
                if len(admitted) == 1:
                    outcomes = [await self._outcome(admitted[0], delivery)]
                    with bound(injury_id=outcomes[0].injury_id):
                        context = await self._counted(delivery, outcomes[0])
                        await self.effects.carry_out(
                            outcomes[0], delivery, decide(outcomes[0], context)
                        )
                else:  # an envelope: its entries are not redelivered one by one
                    outcomes = [await self._outcome(a, delivery) for a in admitted]
                    outcomes = outcomes or [_empty_envelope(delivery, self.dry_run)]
                    context = Context(dry_run=self.dry_run, pager=self.effects.pager is not None)
                    decisions = [decide(o, context) for o in outcomes]
                    await self.effects.carry_out_all(outcomes, delivery, decisions)
            for outcome in outcomes:
                self._observe(outcome, started)
        except asyncio.CancelledError:
            if delivery.max_attempts is not None:  # cut off by shutdown: hand it back now
                with contextlib.suppress(Exception):
                    await asyncio.shield(delivery.settler.nak(0))
            else:
                log.error("injury_cut_off", detail="core NATS mode cannot redeliver it")
            raise
        except Exception:  # a bug must never kill the agent; the message comes back later
            log.exception("process_internal_error")
            with contextlib.suppress(Exception):
                await delivery.settler.nak(nak_delay_s(delivery.attempt))
        finally:
            if keeper is not None:
                keeper.cancel()

    async def announce_aside(self, outcome: Outcome) -> None:
        """Decide and carry out an outcome no message carries (an approval, carried out)."""
        delivery = Delivery(data=b"", subject="auto-healer.controls", received_at=time.time())
        context = Context(dry_run=self.dry_run, pager=self.effects.pager is not None)
        await self.effects.carry_out(outcome, delivery, decide(outcome, context))
        self._observe(outcome, time.monotonic())

    async def _counted(self, delivery: Delivery, outcome: Outcome) -> Context:
        """The delivery's context; a failed heal on a transport that redelivers forever is
        counted against the heal budget (an outage is not; a count that fails is left out)."""
        failed_heal = outcome.kind is Kind.FAILED and outcome.retryable
        if failed_heal and delivery.redelivers_forever and not outcome.store_unavailable:
            with contextlib.suppress(TransientError):
                count = await self.healer.coordinator.count_attempt(outcome.injury_id or "")
                return self._context(delivery, heal_attempts=count)
        return self._context(delivery)

    async def _outcome(self, admitted: Admitted, delivery: Delivery) -> Outcome:
        if isinstance(admitted, Rejection):
            return self._rejected(admitted, delivery)
        if self.guard is not None:
            return await self.guard.handle(admitted, self.healer.handle)
        return await self.healer.handle(admitted)

    @staticmethod
    async def _keep_in_progress(delivery: Delivery, every_s: float) -> None:
        """A long heal tells the transport it is alive, so it is not redelivered meanwhile."""
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await delivery.settler.in_progress()


def _empty_envelope(delivery: Delivery, dry_run: bool) -> Outcome:
    """An envelope with no injuries (a clean audit) still has one outcome: nothing to do."""
    return Outcome(
        Kind.SKIPPED,
        "an envelope with no injuries",
        raw=delivery.data,
        raw_id=body_id(delivery),
        dry_run=dry_run,
    )
