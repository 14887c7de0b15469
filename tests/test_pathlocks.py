"""The path locks of a batch: asked for together, a busy one waited for in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import KvCoordinator, Lease, LocalCoordinator, PathBusy
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.pathlocks import path_locks
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, commit_count, injury


class SlowStore(LocalCoordinator):
    """The local coordinator with a store's round trip before each lock, counting how many
    lock requests are under way at once."""

    def __init__(self) -> None:
        super().__init__()
        self.asking = 0
        self.most = 0

    @asynccontextmanager
    async def path_lock(self, key: str, *, wait: bool = True) -> AsyncIterator[Lease]:
        self.asking += 1
        self.most = max(self.most, self.asking)
        await asyncio.sleep(0.02)
        self.asking -= 1
        async with super().path_lock(key, wait=wait) as lease:
            yield lease


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[object]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.drain()


async def test_a_batch_asks_for_every_path_lock_at_once(repo: tuple[Path, Path]) -> None:
    """A batch of 20 paths asks the store for its 20 locks together, not one after another."""
    remote, work = repo
    names = [f"lk{i}" for i in range(20)]
    seed_dirs(work, names)
    before = commit_count(remote)
    store = SlowStore()
    healer = Healer(
        load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, coordinator=store
    )
    parsed = [parse_injury(json.dumps(injury(f"core/src/{n}/")).encode()) for n in names]
    outcomes = await asyncio.gather(*(healer.handle(p) for p in parsed))
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 20, [o.reason for o in outcomes]
    assert commit_count(remote) - before <= 2
    assert store.most >= 10  # one batch (or two) asked for all of its locks together


async def test_a_busy_path_is_waited_for_holding_nothing_after_it(js: object) -> None:
    """While path m is busy, the batch holds a (before it) but not z (after it); it gets all
    three once m is free."""
    a = await KvCoordinator.create(js, owner="a", lock_ttl_s=30, lock_wait_s=10)
    b = await KvCoordinator.create(js, owner="b", lock_ttl_s=30)
    got: list[str] = []
    z_was_free = asyncio.Event()

    async def batch() -> None:
        async with path_locks(a, ["z", "m", "a"]) as locks:
            got.extend(sorted(locks.leases))

    async with b.path_lock("m"):
        task = asyncio.create_task(batch())
        await asyncio.sleep(0.5)  # a has asked for all three and is waiting for m
        assert not task.done()
        with pytest.raises(PathBusy):
            async with b.path_lock("a", wait=False):
                pass
        async with b.path_lock("z", wait=False):
            z_was_free.set()  # while a waited for m: two replicas never wait on each other
    await asyncio.wait_for(task, 10)
    assert z_was_free.is_set()
    assert got == ["a", "m", "z"]
