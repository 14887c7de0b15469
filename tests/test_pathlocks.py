"""The path locks of a batch on a real JetStream KV: taken together, kept by one task, exclusive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.errors import TransientError
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.pathlocks import hold_all
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, injury


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[object]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.drain()


async def _keys(coord: KvCoordinator) -> set[str]:
    from nats.js.errors import NoKeysError

    try:
        return set(await coord.locks.keys())
    except NoKeysError:
        return set()


async def test_a_batch_holds_every_lock_and_lets_go_of_all(js: object) -> None:
    """While held, no other replica takes any of the paths; afterwards the bucket is empty."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=30)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=30)
    keys = [f"repo|core/src/d{i}" for i in range(20)]
    async with hold_all(a, keys) as held:
        assert sorted(held.leases) == sorted(keys) and not held.failed
        assert await _keys(a) == {kv_key(k) for k in keys}
        with pytest.raises(TransientError, match="another replica"):
            async with b.path_lock(keys[7]):
                pass
    assert await _keys(a) == set()


async def test_a_busy_path_fails_alone_without_waiting(js: object) -> None:
    """With no wait allowed, the path another replica holds fails; the others are held."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=30)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=30)
    async with b.path_lock("repo|y"), hold_all(a, ["repo|x", "repo|y", "repo|z"]) as held:
        assert sorted(held.leases) == ["repo|x", "repo|z"]
        assert "another replica" in str(held.failed["repo|y"])


async def test_a_busy_path_is_waited_for_in_order_holding_nothing_above_it(js: object) -> None:
    """With a wait allowed, the locks above the busy key are let go while it is waited for."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=30, lock_wait_s=5)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=30)
    seen: set[str] = set()

    async def holder() -> None:
        async with b.path_lock("repo|m"):
            await asyncio.sleep(0.5)
            seen.update(await _keys(a))  # what a holds while it waits for repo|m

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.1)
    async with hold_all(a, ["repo|z", "repo|a", "repo|m"]) as held:
        assert sorted(held.leases) == ["repo|a", "repo|m", "repo|z"] and not held.failed
    await task
    assert kv_key("repo|z") not in seen and kv_key("repo|a") in seen


async def test_one_task_keeps_every_lock_of_a_long_batch(js: object) -> None:
    """Past the TTL every lock is still held (one refresher); another replica cannot take one."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=1.2)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=1.2)
    keys = [f"repo|slow{i}" for i in range(5)]
    async with hold_all(a, keys) as held:
        await asyncio.sleep(2.5)
        assert not [lease.lost for lease in held.leases.values() if lease.lost]
        with pytest.raises(TransientError):
            async with b.path_lock(keys[3]):
                pass


async def test_a_lock_taken_over_is_lost(js: object) -> None:
    """A lock rewritten by someone else is marked lost at the next refresh: no push with it."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=0.9)
    async with hold_all(a, ["repo|p", "repo|q"]) as held:
        await a.locks.put(kv_key("repo|q"), b"intruder")
        await asyncio.sleep(0.6)
        with pytest.raises(TransientError, match="taken over"):
            held.leases["repo|q"].check()
        held.leases["repo|p"].check()


async def test_a_batch_keeps_its_locks_with_one_task(
    repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A batch of 40 heals on KV locks runs one lock refresher, not one per path (was 40)."""
    _remote, work = repo
    names = [f"l{i:02d}" for i in range(40)]
    seed_dirs(work, names)
    nc = await nats.connect(nats_server.url)
    coord = await KvCoordinator.create(nc.jetstream(), owner="a", lock_ttl_s=30)
    healer = Healer(
        load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, coordinator=coord
    )
    parsed = [parse_injury(json.dumps(injury(f"core/src/{n}/")).encode()) for n in names]
    heals = asyncio.gather(*(healer.handle(p) for p in parsed))
    most = 0
    while not heals.done():
        refreshers = [
            t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("._refresh")
        ]
        most = max(most, len(refreshers))
        await asyncio.sleep(0)
    outcomes = await heals
    await nc.drain()
    assert [o.kind for o in outcomes] == [Kind.HEALED] * len(names)
    assert 1 <= most <= 2  # the batch of one that went first, and the rest
