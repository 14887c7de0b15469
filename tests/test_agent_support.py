"""The waits of the agent tests fail loudly, saying what they awaited and what they saw."""

from __future__ import annotations

import json

import nats
import pytest
from auto_healer.embedded import NatsServer

from tests.agent_support import Events, wait_until


async def test_wait_for_raises_naming_what_arrived(nats_server: NatsServer) -> None:
    """Fewer events than awaited is an error that names the count, the subject and what came."""
    events = await Events().start(nats_server.url)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish("aura.hive.events.injury_healed", json.dumps({"event_type": "x"}).encode())
        await nc.flush()
        await events.wait_for(1, timeout_s=10)
        with pytest.raises(AssertionError) as exc:
            await events.wait_for(2, timeout_s=0.2)
        assert str(exc.value) == (
            "timed out after 0.2 s waiting for 2 messages on aura.hive.events.>; "
            "saw 1 arrived: {'x': 1}"
        )
    finally:
        await nc.drain()
        await events.close()


async def test_wait_until_accepts_async_predicates_and_raises_on_timeout() -> None:
    """An async predicate is awaited; a predicate that stays false raises naming the wait."""
    calls: list[int] = []

    async def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until(third_time, 5, "the third call", interval_s=0.01)
    assert len(calls) == 3
    with pytest.raises(AssertionError, match=r"^timed out after 0\.05 s waiting for never$"):
        await wait_until(lambda: False, 0.05, "never", interval_s=0.01)
    with pytest.raises(AssertionError, match=r"; saw 3 calls$"):
        await wait_until(lambda: False, 0.05, "never", seen=lambda: "3 calls")
