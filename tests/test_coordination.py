"""Coordination across replicas on a real JetStream KV: path locks, throttle windows, healed ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from auto_healer.coordination import KvCoordinator, LocalCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.errors import TransientError


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[object]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.drain()


async def test_path_lock_excludes_a_second_replica_until_released(js: object) -> None:
    """While one replica holds a path, another gets a TransientError; after release it may."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=30)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=30)
    async with a.path_lock("repo|core/src/x"):
        with pytest.raises(TransientError, match="another replica"):
            async with b.path_lock("repo|core/src/x"):
                pass
        async with b.path_lock("repo|core/src/other"):
            pass  # other paths are free
    async with b.path_lock("repo|core/src/x"):
        pass


async def test_dead_replicas_lock_expires_with_its_ttl(js: object) -> None:
    """A lock whose holder died (never released) frees itself after the TTL."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=1)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=1, lock_wait_s=5)
    await a.locks.create(kv_key("repo|dead"), b"a")  # what a killed replica leaves behind
    started = asyncio.get_running_loop().time()
    async with b.path_lock("repo|dead"):
        waited = asyncio.get_running_loop().time() - started
    assert 0.5 < waited < 5


async def test_long_heal_keeps_its_lock_by_refreshing(js: object) -> None:
    """A heal longer than the TTL keeps the lock: it is refreshed every third of the TTL."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=1.2)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=1.2)
    async with a.path_lock("repo|slow"):
        await asyncio.sleep(2.5)
        with pytest.raises(TransientError):
            async with b.path_lock("repo|slow"):
                pass


async def test_throttle_window_is_claimed_once_but_the_claimant_may_retry(js: object) -> None:
    """A throttle window is claimed once; its own redelivery may retry; a released one is free."""
    a = await KvCoordinator.create(js, owner="a")
    b = await KvCoordinator.create(js, owner="b")
    assert await a.claim_window("k", 60, "injury-1")
    assert not await b.claim_window("k", 60, "injury-2")
    assert not await a.claim_window("k", 60, "injury-3")
    assert await b.claim_window("k", 60, "injury-1")  # redelivered to the other replica
    await b.release_window("k", "injury-1")  # its heal failed: the window must not throttle a retry
    assert await b.claim_window("k", 60, "injury-2")
    await b.release_window("k", "injury-2")
    await asyncio.sleep(1.1)  # other replicas cache what they saw for one second at most
    assert await a.claim_window("k", 60, "injury-4")


async def test_healed_ids_are_shared_between_replicas(js: object) -> None:
    """An id healed by one replica is known to another."""
    a = await KvCoordinator.create(js, owner="a")
    b = await KvCoordinator.create(js, owner="b")
    assert await b.healed_commit("bee-7") is None
    await a.mark_healed("bee-7", "abc123")
    assert await b.healed_commit("bee-7") == "abc123"


async def test_store_outage_is_transient(nats_server: NatsServer) -> None:
    """When NATS is gone, coordination raises TransientError (retry), never a raw client error."""
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=0, allow_reconnect=False)
    coord = await KvCoordinator.create(nc.jetstream(), owner="a")
    nats_server.kill()
    await asyncio.sleep(0.2)
    with pytest.raises(TransientError, match="coordination store unavailable"):
        await coord.healed_commit("x")
    with pytest.raises(TransientError):
        await coord.claim_window("k", 10, "x")
    await nc.close()


async def test_local_coordinator_memory_is_bounded() -> None:
    """The in-process coordinator forgets the oldest entries beyond its bound."""
    local = LocalCoordinator(max_entries=100)
    for i in range(1000):
        await local.mark_healed(f"id{i}", "c")
        await local.claim_window(f"k{i}", 60, f"id{i}")
    assert len(local._healed) == 100
    assert len(local._windows) == 100
    assert await local.healed_commit("id999") == "c"
    assert await local.healed_commit("id0") is None
