"""The cluster agent: injuries from the bloodstream through the healer, outcomes back out.

Two intake modes share one pipeline. Core NATS: a queue-group subscription (each injury to one
replica, at most once). JetStream (`--jetstream`): a durable pull consumer shared by every
replica (at least once): ack only after the outcome is recorded, nak with delay on transient
failure, dead-letter and term poison. Either way each message is handled by `_process()`:
verify → heal → `consequence()` → page → event → dead letter → settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import nats.errors
import structlog

from auto_healer.bloodstream import DEAD_LETTER_SUBJECT, DURABLE, Publisher, ensure_streams
from auto_healer.contracts import (
    SUBJECT_HEARTBEAT,
    SUBJECT_INJURY,
    DomainEvent,
    Heartbeat,
    event_subject,
)
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.healer import Healer
from auto_healer.metrics import HealthServer, Metrics
from auto_healer.outcomes import (
    Kind,
    Outcome,
    PageAction,
    Settle,
    consequence,
    nak_delay_s,
    settle_after_page,
)
from auto_healer.pager import Delivery, Pager
from auto_healer.report import outcome_dict
from auto_healer.settings import Settings

log = structlog.get_logger("auto_healer.agent")
SERVICE = "auto-healer"
SUCCESS = (Kind.HEALED, Kind.PLANNED, Kind.SKIPPED)


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
        max_deliver: int = 5,
    ) -> None:
        self.settings = settings
        self.healer = healer
        self.nc = nc
        self.js = nc.jetstream() if settings.jetstream else None
        self.pager = pager
        self.metrics = metrics or Metrics()
        self.publisher = Publisher(nc, self.metrics)
        self.max_deliver = max_deliver
        self.stopping = asyncio.Event()
        self.subscribed = False
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_tick = time.monotonic()
        self._signing_key = (
            settings.injury_signing_key.get_secret_value().encode()
            if settings.injury_signing_key
            else None
        )

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
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
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
        background = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._tick())]
        try:
            if self.js is not None:
                psub, stream = await self._jetstream_intake()
                self.subscribed = True
                log.info(
                    "agent_subscribed", stream=stream, durable=DURABLE, dry_run=self.healer.dry_run
                )
                intake = asyncio.create_task(self._pull_loop(psub))
                intake.add_done_callback(lambda _t: self.stopping.set())  # a dead loop stops us
            else:
                sub = await self.nc.subscribe(
                    SUBJECT_INJURY,
                    queue=self.settings.queue_group,
                    cb=self._on_core_msg,
                    pending_msgs_limit=1_000_000,
                    pending_bytes_limit=1024 * 1024 * 1024,
                )
                self.subscribed = True
                log.info(
                    "agent_subscribed",
                    subject=SUBJECT_INJURY,
                    queue_group=self.settings.queue_group,
                    dry_run=self.healer.dry_run,
                )
            await self.stopping.wait()
            log.info("agent_stopping", in_flight=self.in_flight)
            if self.js is not None:
                await intake
            else:
                await sub.unsubscribe()
            await self._finish_in_flight()
            await self._beat("stopping")
        finally:
            for task in background:
                task.cancel()
            with contextlib.suppress(Exception):
                await self.nc.drain()
            if health is not None:
                health.stop()
            log.info("agent_stopped")

    async def _jetstream_intake(self) -> tuple[Any, str]:
        """Ensure the streams and the durable consumer, and bind to it; a clear error if not."""
        assert self.js is not None
        try:
            stream = await ensure_streams(
                self.js, max_deliver=self.max_deliver, ack_wait_s=self.settings.ack_wait_s
            )
            psub = await self.js.pull_subscribe(SUBJECT_INJURY, durable=DURABLE, stream=stream)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"cannot set up JetStream intake (consumer {DURABLE!r}): "
                f"{exc or type(exc).__name__}; is JetStream enabled, and may this user use "
                "the streams and consumer (see deploy/nats/nats-server.conf)?"
            ) from None
        return psub, stream

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
        self._spawn(self._process(msg.data, msg.headers))

    async def _pull_loop(self, psub: Any) -> None:
        """Fetch as many messages as there are free slots, and no more (none waits unhandled)."""
        while not self.stopping.is_set():
            await self._slots.acquire()
            slots = 1
            while slots < self.settings.max_in_flight and not self._slots.locked():
                await self._slots.acquire()
                slots += 1
            try:
                msgs = await psub.fetch(batch=slots, timeout=1.0)
            except nats.errors.TimeoutError:
                msgs = []
            except Exception as exc:  # reconnecting, server restarting: wait and go on
                log.warning("fetch_failed", error=str(exc) or type(exc).__name__)
                msgs = []
                await asyncio.sleep(0.5)
            for _ in range(slots - len(msgs)):
                self._slots.release()
            for msg in msgs:
                self._spawn(self._process_js(msg))
        with contextlib.suppress(Exception):
            await psub.unsubscribe()

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
                await self._settle(outcome, data, headers, msg, deliveries)
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
            from auto_healer.signing import verify

            try:
                verify(data, headers, self._signing_key)
            except InjuryRejected as exc:
                return Outcome(Kind.REJECTED, str(exc), raw=data, dry_run=self.healer.dry_run)
        return await self.healer.handle_message(data, headers)

    async def _settle(
        self,
        outcome: Outcome,
        data: bytes,
        headers: Mapping[str, str] | None,
        msg: Any,
        deliveries: int,
    ) -> None:
        """Carry out what `consequence()` decided: page, event, dead letter, ack/nak/term."""
        redeliverable = msg is not None and deliveries < self.max_deliver
        c = consequence(
            outcome,
            can_redeliver=redeliverable,
            out_of_deliveries=msg is not None and not redeliverable,
        )
        settle = c.settle
        if c.page is not PageAction.NONE and self.pager is not None:
            delivery = await self.pager.notify(
                outcome, c.page, repo=self.healer.repo_key, durable=not redeliverable
            )
            self.metrics.pages.labels(delivery=str(delivery)).inc()
            settle = settle_after_page(c, page_delivered=delivery is not Delivery.UNDELIVERED)
        if settle is not Settle.NAK:
            await self.publisher.publish(
                event_subject(c.event_type), self._event(outcome, c.event_type)
            )
        if c.dead_letter:
            dl_headers = {
                "Auto-Healer-Reason": outcome.reason[:1000].replace("\n", " "),
                "Auto-Healer-Outcome": outcome.kind.value,
            }
            if headers and headers.get("Nats-Msg-Id"):
                dl_headers["Auto-Healer-Injury-Id"] = headers["Nats-Msg-Id"]
            await self.publisher.publish(DEAD_LETTER_SUBJECT, data, dl_headers, js=self.js)
        if msg is None:
            return
        if settle is Settle.ACK:
            await msg.ack()
        elif settle is Settle.TERM:
            await msg.term()
        else:
            await msg.nak(delay=nak_delay_s(deliveries))

    def _event(self, outcome: Outcome, event_type: str) -> dict[str, Any]:
        metadata = outcome_dict(outcome)
        metadata["repo"] = self.healer.repo_key
        event = DomainEvent(
            success=outcome.kind in SUCCESS,
            event_type=event_type,
            timestamp=time.time(),
            metadata=metadata,
        )
        return event.model_dump(exclude_none=True)

    # --- background -------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        usage = _cpu_seconds(), time.monotonic()
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            now = _cpu_seconds(), time.monotonic()
            cpu = 100.0 * (now[0] - usage[0]) / max(1e-6, now[1] - usage[1])
            usage = now
            await self._beat("active", cpu)

    async def _beat(self, status: Literal["active", "stopping"], cpu_percent: float = 0.0) -> None:
        beat = Heartbeat(
            status=status,
            timestamp=time.time(),
            service=SERVICE,
            metadata={
                "cpu_percent": round(cpu_percent, 1),
                "memory_mb": round(rss_mib(), 1),
                "in_flight": self.in_flight,
                "mode": "jetstream" if self.js else "core",
                "dry_run": self.healer.dry_run,
            },
        )
        # Fire-and-forget, as the seed does for heartbeats.
        with contextlib.suppress(Exception):
            await self.nc.publish(SUBJECT_HEARTBEAT, beat.model_dump_json().encode())
            self.metrics.published.labels(topic=SUBJECT_HEARTBEAT).inc()


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def rss_mib() -> float:
    """Resident memory of this process in MiB (from /proc, else the peak from getrusage)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
