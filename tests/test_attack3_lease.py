"""Attack on the lease lapse (`Lease.check` fails once the TTL has passed since the last lock
write the store took): a batch that waits for a busy path must not lose, for nothing, the
locks it already holds while the store is healthy. Real nats-server, real KV buckets."""

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
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.pathlocks import hold_all
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, injury
from tests.test_checkout import hook

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


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_batch_whose_push_outlasts_the_ttl_keeps_its_locks(
    js: object, repo: tuple[Path, Path]
) -> None:
    """LOCK_TTL_S 1.5 and a pre-receive hook that takes three TTLs: the batch of two (300
    files each) is refreshed all along its push and heals, no false lapse."""
    remote, work = repo
    for name in ("a", "b"):
        d = work / "core" / "src" / name
        d.mkdir(parents=True)
        for i in range(300):
            (d / f"f{i}.py").write_text(f"# {i}\n")
    seed_dirs(work, [])
    hook(remote, "pre-receive", f"#!/bin/sh\ncat >/dev/null\nsleep {3 * TTL_S}\n")
    coord = await KvCoordinator.create(js, owner="a", lock_ttl_s=TTL_S)
    healer = Healer(
        load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, coordinator=coord
    )
    parsed = [parse_injury(json.dumps(injury(f"core/src/{n}/")).encode()) for n in "ab"]
    outcomes = await asyncio.gather(*(healer.handle(p) for p in parsed))
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 2, [o.reason for o in outcomes]
    assert outcomes[0].commit == outcomes[1].commit  # one batch, one push
