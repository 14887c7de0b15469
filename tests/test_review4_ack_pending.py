"""JetStream intake with more slots than the consumer's `max_ack_pending` (MAX_IN_FLIGHT may be
1024, the durable consumer allows 1000): a backlog is fetched at once, not after a fetch that
waits out its whole timeout for messages the server will not send."""

from __future__ import annotations

import asyncio
import time

import nats
from auto_healer.bloodstream import open_intake
from auto_healer.contracts import SUBJECT_INJURY
from auto_healer.embedded import NatsServer
from auto_healer.settings import Settings
from auto_healer.sources import Delivery, Slots
from auto_healer.sources.nats_js import JetStreamSource

BACKLOG = 1100  # past the consumer's max_ack_pending (1000)
FETCH_TIMEOUT_S = 3.0


async def test_a_backlog_is_fetched_without_waiting_out_the_fetch(nats_server: NatsServer) -> None:
    """With every slot of the default MAX_IN_FLIGHT free, the first deliveries of a backlog of
    1100 arrive well within the fetch timeout, and never more than the consumer allows."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    intake = await open_intake(js, dry_run=False, max_deliver=10, ack_wait_s=60)
    for i in range(BACKLOG):
        await js.publish(SUBJECT_INJURY, b'{"n": %d}' % i)
    got: list[Delivery] = []
    source = JetStreamSource(intake, fetch_timeout_s=FETCH_TIMEOUT_S)
    slots = Slots(Settings.model_fields["max_in_flight"].default)
    stopping = asyncio.Event()
    started = time.monotonic()
    await source.start(slots, got.append, stopping)
    try:
        while not got:
            assert time.monotonic() - started < 2 * FETCH_TIMEOUT_S, "nothing fetched"
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        assert took < FETCH_TIMEOUT_S / 2, f"first deliveries after {took:.2f}s"
        assert len(got) == 1000
    finally:
        stopping.set()
        await source.stop()
        await nc.close()
