"""A batch lets go of its path locks with no reply asked (`pathlocks.let_go_by`): the next
batch on the same connection finds them gone, and a lock another replica took since is never
deleted. Real nats-server, real JetStream KV."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from auto_healer.coordination import KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.pathlocks import hold_all, let_go_by

from tests.test_pathlocks import _keys


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Any]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.drain()


async def _coordinator(nc: Any, owner: str) -> KvCoordinator:
    coord = await KvCoordinator.create(nc.jetstream(), owner=owner, lock_ttl_s=30)
    coord.let_go = let_go_by(nc.publish)
    return coord


async def _settled(coord: KvCoordinator) -> None:
    """Every unanswered delete published before now has been stored: an acked write to the same
    bucket from the same connection is stored after them."""
    await coord.locks.put("sentinel", b"x")
    await coord.locks.purge("sentinel")


async def test_the_next_batch_takes_the_same_paths_at_once(nc: Any) -> None:
    """Two batches in a row on the same 40 paths: the second holds every lock, none busy; then
    the bucket is empty."""
    coord = await _coordinator(nc, "a")
    keys = [f"repo|core/src/d{i}" for i in range(40)]
    async with hold_all(coord, keys) as first:
        assert len(first.leases) == 40 and not first.failed
    async with hold_all(coord, keys) as second:
        assert len(second.leases) == 40 and not second.failed, second.failed
    await _settled(coord)
    assert await _keys(coord) == set()


async def test_a_lock_taken_over_since_is_not_let_go_of(nc: Any) -> None:
    """Our lock expired and another replica took the path: our delete names our revision, so
    theirs stays."""
    a = await _coordinator(nc, "a")
    async with hold_all(a, ["repo|x", "repo|y"]) as held:
        assert not held.failed
        await a.locks.purge(kv_key("repo|x"))  # as an expiry would
        await a.locks.create(kv_key("repo|x"), b"b")  # replica b takes the path
    await _settled(a)
    assert await _keys(a) == {kv_key("repo|x")}
    assert (await a.locks.get(kv_key("repo|x"))).value == b"b"
