"""`kvwire` under a hostile environment: buckets an operator made with other options, replies
lost or late, reconnects. Each test here failed on the first `kvwire` (branch `wire`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from auto_healer.assets import BUCKET_LOCKS
from auto_healer.coordination import KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from nats.js.api import KeyValueConfig

from tests.agent_support import wait_until


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def test_a_lock_that_expired_under_a_limit_marker_can_be_taken_again(nc: Any) -> None:
    """`nats kv add --marker-ttl` buckets leave a marker (`Nats-Marker-Reason: MaxAge`, no
    `KV-Operation`) where a dead replica's lock ran out: the path is free, not held until the
    marker expires."""
    js = nc.jetstream()
    config = KeyValueConfig(bucket=BUCKET_LOCKS, ttl=1, history=1, limit_marker_ttl=300)
    await js.create_key_value(config)
    dead = await KvCoordinator.create(js, owner="dead", lock_ttl_s=1)
    await dead.locks.create(kv_key("repo|a"), b"dead")  # taken, never let go nor refreshed

    subject = f"$KV.{BUCKET_LOCKS}.{kv_key('repo|a')}"

    async def marker() -> bool:
        msg = await js.get_msg(f"KV_{BUCKET_LOCKS}", subject=subject)
        return "Nats-Marker-Reason" in (msg.headers or {})

    await wait_until(marker, 10.0, "the expired lock's marker")
    alive = await KvCoordinator.create(js, owner="alive", lock_ttl_s=60)
    async with alive.path_lock("repo|a") as lease:
        assert lease.revision
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await alive.locks.get(kv_key("repo|a"))  # let go: the marker, then our delete


async def test_a_throttle_window_under_a_second_is_claimed_not_an_outage(nc: Any) -> None:
    """A playbook may throttle for 0.5 s (`window_s > 0`): the server refuses `Nats-TTL: 0`,
    which read as a store outage on every claim (the injury retried forever, readiness down)."""
    a = await KvCoordinator.create(nc.jetstream(), owner="a")
    b = await KvCoordinator.create(nc.jetstream(), owner="b")
    assert await a.claim_window("core/src/", 0.5, "bee-1")
    assert not await b.claim_window("core/src/", 0.5, "bee-2")
    assert a.degraded() is None

    async def ran_out() -> bool:
        return await b.claim_window("core/src/", 0.5, "bee-3")

    await wait_until(ran_out, 10.0, "the 0.5 s window to run out")
