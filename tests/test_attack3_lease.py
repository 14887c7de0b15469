"""Attack on the lease lapse (`Lease.check` fails once the TTL has passed since the last lock
write the store took): a batch that waits for a busy path must not lose, for nothing, the
locks it already holds while the store is healthy. Real nats-server, real KV buckets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from auto_healer.coordination import KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.pathlocks import hold_all

TTL_S = 1.5


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[object]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.drain()


@pytest.mark.slow
async def test_locks_held_while_a_busy_path_is_waited_for_stay_fresh(js: object) -> None:
    """A batch holding repo|a waits longer than the TTL for repo|m (another replica's): once it
    has them all, every lease still holds and repo|a is still its own in the store."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=TTL_S, lock_wait_s=10)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=TTL_S)
    taken = asyncio.Event()

    async def other_replica() -> None:
        async with b.path_lock("repo|m"):  # refreshed by b all along: a healthy store
            taken.set()
            await asyncio.sleep(2 * TTL_S)

    task = asyncio.create_task(other_replica())
    await asyncio.wait_for(taken.wait(), 5)
    async with hold_all(a, ["repo|a", "repo|m"]) as held:
        assert task.done()  # repo|m was waited for, past a's TTL
        assert sorted(held.leases) == ["repo|a", "repo|m"] and not held.failed
        await asyncio.sleep(TTL_S / 2)  # a refresh or two of the batch's own task
        for key, lease in held.leases.items():
            lease.check()  # a false lapse raises here: the batch's push would fail
            entry = await a.locks.get(kv_key(key))
            assert entry.value == b"a", key
    await task
