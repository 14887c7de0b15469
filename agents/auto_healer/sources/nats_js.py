"""JetStream intake: a durable pull consumer shared by every replica, at least once.

A message is fetched only when a slot is free for it, and settled once, as the decision says:
ack, nak with a delay, or term. A long heal extends its message (`in_progress`) so it is not
redelivered to another replica meanwhile. A dry-run replica reads through a private consumer.
A fetch that times out empty calls `on_idle` (the agent's lag then reads 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import structlog

from auto_healer.assets import DURABLE
from auto_healer.bloodstream import Intake
from auto_healer.sources import Delivery, Slots, Submit

log = structlog.get_logger("auto_healer.sources.nats_js")
CONSUMER_CHECK_S = 3.0  # while idle: how often the consumer is checked to be there at all
LOST_AFTER = 2  # checks in a row that find it gone (not a cluster still settling): lost


class JsSettler:
    """Settles one JetStream message."""

    def __init__(self, msg: Any) -> None:
        self.msg = msg

    async def ack(self) -> None:
        await self.msg.ack()

    async def nak(self, delay_s: float) -> None:
        await self.msg.nak(delay=delay_s if delay_s > 0 else None)

    async def term(self) -> None:
        await self.msg.term()

    async def in_progress(self) -> None:
        await self.msg.in_progress()


def delivery_of(
    msg: Any, *, max_deliver: int, ack_wait_s: float, unlimited: bool = False
) -> Delivery:
    """A neutral delivery of a JetStream message: its attempt and stream time from metadata.
    An `unlimited` consumer redelivers forever; `max_deliver` is then the agent's budget."""
    meta = msg.metadata
    return Delivery(
        data=msg.data,
        subject=msg.subject,
        received_at=meta.timestamp.timestamp(),
        headers=dict(msg.headers or {}),
        attempt=int(meta.num_delivered),
        max_attempts=max_deliver,
        settler=JsSettler(msg),
        keepalive_s=max(0.5, ack_wait_s / 3),
        redelivers_forever=unlimited,
    )


class JetStreamSource:
    """Pulls as many messages as there are free slots, and no more."""

    name = "nats-jetstream"

    def __init__(
        self,
        intake: Intake,
        *,
        fetch_timeout_s: float = 1.0,
        on_idle: Callable[[], None] = lambda: None,
        gate: Slots | None = None,
        on_lost: Callable[[str], None] = lambda why: None,
    ) -> None:
        self.intake = intake
        self.on_lost = on_lost  # the consumer is gone for good: `Liveness.lost`
        self._checked = time.monotonic()
        self._missing = 0  # checks in a row that found the consumer gone
        self.gate = gate  # passed before each fetch; held shut (paused) it fetches nothing
        self.fetch_timeout_s = fetch_timeout_s
        self.on_idle = on_idle  # called after a fetch that found the consumer empty
        self._loop: asyncio.Task[None] | None = None
        self._withheld: tuple[Slots, int] | None = None

    async def start(self, slots: Slots, submit: Submit, stopping: asyncio.Event) -> None:
        most = self.intake.max_ack_pending
        if 0 < most < slots.size:
            # The server sends no more than `most` unacknowledged: a fetch for more would wait
            # out its whole timeout for them, holding what came meanwhile. Never use the rest.
            self._withheld = (slots, await slots.reserve(slots.size - most))
        self._loop = asyncio.create_task(self._pull(slots, submit, stopping))
        self._loop.add_done_callback(lambda _t: stopping.set())  # a dead loop stops the agent

    async def _pull(self, slots: Slots, submit: Submit, stopping: asyncio.Event) -> None:
        """The stop is checked after every wait: nats-py's fetch may swallow a cancellation."""
        intake = self.intake
        while not stopping.is_set():
            msgs = await self._fetch(slots, stopping)
            for msg in msgs:
                if stopping.is_set():  # fetched as the stop came: hand it back at once
                    slots.release()
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    continue
                submit(
                    delivery_of(
                        msg,
                        max_deliver=intake.max_deliver,
                        ack_wait_s=intake.ack_wait_s,
                        unlimited=intake.unlimited,
                    )
                )

    async def _fetch(self, slots: Slots, stopping: asyncio.Event) -> list[Any]:
        """One fetch into the free slots; through the gate, held for the whole fetch, so a
        gate closed (paused) means no fetch is under way any more."""
        if self.gate is not None:
            await self.gate.reserve()
        try:
            reserved = await slots.reserve(slots.size)
            msgs: list[Any] = []
            if not stopping.is_set():
                try:
                    msgs = await self.intake.psub.fetch(
                        batch=reserved, timeout=self.fetch_timeout_s
                    )
                except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                    self.on_idle()
                    await self._check_consumer()
                except Exception as exc:  # reconnecting, server restarting: wait and go on
                    log.warning("fetch_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(0.5)
                    await self._check_consumer()
            slots.release(reserved - len(msgs))
            return msgs
        finally:
            if self.gate is not None:
                self.gate.release()

    async def _check_consumer(self) -> None:
        """While nothing comes, every `CONSUMER_CHECK_S`: is the consumer still there? A NATS
        back with its store lost has neither stream nor consumer, and a fetch then times out
        as if there were nothing to do, forever. Said once; liveness then fails (a restart
        recreates them). An outage is not a loss (the connection's liveness covers it), nor is
        one answer "not found" (`LOST_AFTER`)."""
        now = time.monotonic()
        if now - self._checked < CONSUMER_CHECK_S:
            return
        self._checked = now
        from nats.js.errors import NotFoundError

        try:
            await self.intake.psub.consumer_info()
            self._missing = 0
        except NotFoundError as exc:
            self._missing += 1
            if self._missing < LOST_AFTER:
                return
            i = self.intake
            why = (
                f"the JetStream consumer {DURABLE if i.durable else '(private)'} on stream "
                f"{i.stream} is gone ({exc.description or type(exc).__name__}): NATS lost its "
                "store? A restart recreates the stream and the consumer"
            )
            log.error("intake_lost", reason=why)
            self.on_lost(why)
        except Exception:
            return

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()  # an unfinished fetch is redelivered after ack_wait
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._withheld is not None:
            slots, count = self._withheld
            self._withheld = None
            slots.release(count)
        with contextlib.suppress(Exception):
            await self.intake.psub.unsubscribe()

    def describe(self) -> dict[str, object]:
        i = self.intake
        return {
            "stream": i.stream,
            "durable": i.durable,
            "max_deliver": i.max_deliver,
            "redelivers_forever": i.unlimited,
            "ack_wait_s": i.ack_wait_s,
        }
