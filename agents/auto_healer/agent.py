"""The cluster agent: injuries from the bloodstream through the healer, outcomes back out.

Two intake modes share one pipeline. Core NATS: a queue-group subscription (each injury to one
replica, at most once). JetStream (`--jetstream`): a durable pull consumer shared by every
replica (at least once): ack only after the outcome is recorded, nak with delay on transient
failure, dead-letter and term poison. A dry-run replica reads beside the real ones (no queue
group, a private consumer) and takes nothing from them. Every message goes through
`_process()`: verify → heal → `consequence()` → page → dead letter → event → settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping
from typing import Any

import nats.errors
import structlog

from auto_healer.bloodstream import Intake, Publisher, open_intake
from auto_healer.contracts import SUBJECT_INJURY
from auto_healer.effects import Effects
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.healer import Healer
from auto_healer.heartbeat import SERVICE, Heart
from auto_healer.metrics import HealthServer, Metrics
from auto_healer.outcomes import (
    Kind,
    Outcome,
)
from auto_healer.pager import Pager
from auto_healer.settings import Settings
from auto_healer.signing import verify

log = structlog.get_logger("auto_healer.agent")


class Agent:
    """One replica: subscribes, heals with bounded concurrency, reports, and stops cleanly."""

    def __init__(
        self,
        settings: Settings,
        healer: Healer,
        nc: Any,
        *,
        pager: Pager | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.healer = healer
        self.dry_run = healer.dry_run
        self.nc = nc
        self.js = nc.jetstream() if settings.jetstream else None
        self.pager = pager
        self.metrics = metrics or Metrics()
        self.effects = Effects(
            Publisher(nc, self.metrics),
            pager,
            self.metrics,
            js=self.js,
            repo_key=healer.repo_key,
            dry_run=self.dry_run,
        )
        self.max_deliver = settings.max_deliver
        self.ack_wait_s = settings.ack_wait_s
        self.stopping = asyncio.Event()
        self.subscribed = False
        self.heart = Heart(
            nc,
            self.metrics,
            settings.heartbeat_interval_s,
            lambda: {
                "in_flight": self.in_flight,
                "mode": "jetstream" if self.js else "core",
                "dry_run": self.dry_run,
            },
        )
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_tick = time.monotonic()
        key = settings.injury_signing_key
        self._signing_key = key.get_secret_value().encode() if key else None

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def ready(self) -> bool:
        return self.subscribed and self.nc.is_connected and not self.stopping.is_set()

    def alive(self) -> bool:
        return time.monotonic() - self._last_tick < 30.0

    async def run(self, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or `stopping` is set), then drain and return."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, self.stopping.set)
        health = None
        if self.settings.metrics_port is not None:
            health = HealthServer(
                self.metrics,
                self.settings.metrics_port,
                ready=self.ready,
                alive=self.alive,
                host=self.settings.metrics_host,
            ).start()
            log.info("metrics_listening", port=health.port)
        background = [asyncio.create_task(self.heart.run()), asyncio.create_task(self._tick())]
        try:
            stop_intake = await self._start_intake()
            await self.stopping.wait()
            log.info("agent_stopping", in_flight=self.in_flight)
            await stop_intake()
            await self._finish_in_flight()
            await self.heart.beat("stopping")
        finally:
            for task in background:
                task.cancel()
            with contextlib.suppress(Exception):
                await self.nc.drain()
            if health is not None:
                health.stop()
            log.info("agent_stopped")

    async def _start_intake(self) -> Any:
        """Subscribe; return the coroutine function that stops intake at once."""
        if self.js is None:
            # A dry-run listens beside the queue group, so the real replicas still get all.
            queue = "" if self.dry_run else self.settings.queue_group
            sub = await self.nc.subscribe(
                SUBJECT_INJURY,
                queue=queue,
                cb=self._on_core_msg,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=1024 * 1024 * 1024,
            )
            self.subscribed = True
            log.info(
                "agent_subscribed",
                subject=SUBJECT_INJURY,
                queue_group=queue or None,
                dry_run=self.dry_run,
            )
            return sub.unsubscribe
        intake = await self._jetstream_intake()
        self.max_deliver, self.ack_wait_s = intake.max_deliver, intake.ack_wait_s
        self.subscribed = True
        log.info(
            "agent_subscribed",
            stream=intake.stream,
            durable=intake.durable,
            max_deliver=self.max_deliver,
            ack_wait_s=self.ack_wait_s,
            dry_run=self.dry_run,
        )
        loop = asyncio.create_task(self._pull_loop(intake.psub))
        loop.add_done_callback(lambda _t: self.stopping.set())  # a dead loop stops the agent

        async def stop() -> None:
            loop.cancel()  # an unfinished fetch is redelivered after ack_wait; nothing is lost
            await asyncio.gather(loop, return_exceptions=True)
            with contextlib.suppress(Exception):
                await intake.psub.unsubscribe()

        return stop

    async def _jetstream_intake(self) -> Intake:
        assert self.js is not None
        try:
            return await open_intake(
                self.js,
                dry_run=self.dry_run,
                max_deliver=self.max_deliver,
                ack_wait_s=self.ack_wait_s,
            )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"cannot set up JetStream intake: {exc or type(exc).__name__}; is JetStream "
                "enabled, and may this user use the streams and consumer (see "
                "deploy/nats/nats-server.conf)?"
            ) from None

    async def _finish_in_flight(self) -> None:
        """Give in-flight heals the grace period; cut off the rest (they restore the checkout)."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.grace_period_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("heals_cut_off", count=len(pending))
            await asyncio.wait(pending)

    # --- intake -----------------------------------------------------------------------------

    async def _on_core_msg(self, msg: Any) -> None:
        await self._slots.acquire()  # released when the task is done
        if self.stopping.is_set():
            self._slots.release()
            return
        self._spawn(self._process(msg.data, msg.headers))

    async def _pull_loop(self, psub: Any) -> None:
        """Fetch as many messages as there are free slots, and no more (none waits unhandled).

        The stop is checked after every wait: nats-py's fetch may swallow a cancellation.
        """
        while not self.stopping.is_set():
            await self._slots.acquire()
            slots = 1
            while slots < self.settings.max_in_flight and not self._slots.locked():
                await self._slots.acquire()
                slots += 1
            msgs: list[Any] = []
            if not self.stopping.is_set():
                try:
                    msgs = await psub.fetch(batch=slots, timeout=1.0)
                except nats.errors.TimeoutError:
                    pass
                except Exception as exc:  # reconnecting, server restarting: wait and go on
                    log.warning("fetch_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(0.5)
            for _ in range(slots - len(msgs)):
                self._slots.release()
            for msg in msgs:
                if self.stopping.is_set():  # fetched as the stop came: hand it back at once
                    self._slots.release()
                    with contextlib.suppress(Exception):
                        await msg.nak()
                else:
                    self._spawn(self._process_js(msg))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        self.metrics.in_flight.set(len(self._tasks))

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._slots.release()
            self.metrics.in_flight.set(len(self._tasks))

        task.add_done_callback(done)

    async def _process_js(self, msg: Any) -> None:
        meta = msg.metadata
        keeper = asyncio.create_task(self._keep_in_progress(msg))
        try:
            await self._process(
                msg.data,
                msg.headers,
                msg=msg,
                deliveries=meta.num_delivered,
                sent_at=meta.timestamp.timestamp(),
            )
        except asyncio.CancelledError:
            # Cut off by shutdown: hand it back now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        finally:
            keeper.cancel()

    async def _keep_in_progress(self, msg: Any) -> None:
        """A long heal tells JetStream it is alive, so it is not redelivered to another replica."""
        while True:
            await asyncio.sleep(max(0.5, self.ack_wait_s / 3))
            with contextlib.suppress(Exception):
                await msg.in_progress()

    # --- the one pipeline -------------------------------------------------------------------

    async def _process(
        self,
        data: bytes,
        headers: Mapping[str, str] | None,
        *,
        msg: Any = None,
        deliveries: int = 1,
        sent_at: float | None = None,
    ) -> None:
        started = time.monotonic()
        try:
            outcome = await self._outcome(data, headers)
            with structlog.contextvars.bound_contextvars(injury_id=outcome.injury_id):
                await self.effects.carry_out(
                    outcome, data, headers, msg, deliveries, max_deliver=self.max_deliver
                )
            self._observe(outcome, started, sent_at)
        except asyncio.CancelledError:
            if msg is None:
                log.error("injury_cut_off", detail="core NATS mode cannot redeliver it")
            raise
        except Exception:  # a bug must never kill the agent; JetStream will redeliver
            log.exception("process_internal_error")

    def _observe(self, outcome: Outcome, started: float, sent_at: float | None) -> None:
        playbook = outcome.playbook or "none"
        self.metrics.injuries.labels(outcome=outcome.kind.value, playbook=playbook).inc()
        self.metrics.heal_seconds.labels(playbook=playbook).observe(time.monotonic() - started)
        if outcome.injury is not None:
            published = sent_at or outcome.injury.injury.timestamp
            self.metrics.lag.labels(subscriber=SERVICE).set(max(0.0, time.time() - published))

    async def _outcome(self, data: bytes, headers: Mapping[str, str] | None) -> Outcome:
        if self._signing_key is not None:
            try:
                verify(data, headers, self._signing_key)
            except InjuryRejected as exc:
                return Outcome(Kind.REJECTED, str(exc), raw=data, dry_run=self.dry_run)
        return await self.healer.handle_message(data, headers)

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(1.0)
