"""A path lock whose create timed out while NATS was frozen, but that the server applied once
it thawed, is this replica's own: it is taken back at once, not waited out as another's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import nats
import pytest
from auto_healer.coordination import KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.errors import TransientError
from auto_healer.pathlocks import hold_all
from nats.errors import TimeoutError as NatsTimeout

KV_TIMEOUT_S = 0.5


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[object]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream(timeout=KV_TIMEOUT_S)
    await nc.drain()


async def _stopped(pid: int) -> None:
    """Wait until the kernel says the process is stopped."""
    for _ in range(100):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"nats-server {pid} did not stop")


async def _orphan(server: NatsServer, coord: KvCoordinator, key: str) -> None:
    """Leave the lock as a frozen server does: our create times out, then the server applies it."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    await _stopped(server.proc.pid)
    try:
        with pytest.raises(NatsTimeout):
            await coord.locks.create(kv_key(key), coord.owner.encode())
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    for _ in range(50):  # the thawed server applies the create it had buffered
        try:
            entry = await coord.locks.get(kv_key(key))
        except Exception:
            await asyncio.sleep(0.05)
            continue
        assert entry.value == coord.owner.encode()
        return
    raise AssertionError("the thawed server never applied the timed-out create")


async def test_a_lock_left_by_our_own_timed_out_create_is_taken_back(
    nats_server: NatsServer, js: object
) -> None:
    """One heal: the path is ours at once, and released after."""
    a = await KvCoordinator.create(js, owner="a-1-x", lock_ttl_s=60)
    await _orphan(nats_server, a, "repo|core/x")
    async with a.path_lock("repo|core/x") as lease:
        assert lease.revision > 0
    from nats.js.errors import KeyNotFoundError

    with pytest.raises(KeyNotFoundError):
        await a.locks.get(kv_key("repo|core/x"))


async def test_a_batch_takes_back_its_own_orphan_and_respects_another_owner(
    nats_server: NatsServer, js: object
) -> None:
    """A batch holds the orphaned path; a lock of another replica still fails as busy."""
    a = await KvCoordinator.create(js, owner="a-1-x", lock_ttl_s=60)
    b = await KvCoordinator.create(js, owner="b-2-y", lock_ttl_s=60)
    await _orphan(nats_server, a, "repo|core/x")
    async with b.path_lock("repo|core/y"), hold_all(a, ["repo|core/x", "repo|core/y"]) as held:
        assert list(held.leases) == ["repo|core/x"]
        assert "another replica" in str(held.failed["repo|core/y"])
        with pytest.raises(TransientError, match="another replica"):
            async with b.path_lock("repo|core/x"):
                pass


@pytest.mark.parametrize("batch", [False, True])
async def test_our_own_refresh_applied_late_keeps_the_lock(js: object, batch: bool) -> None:
    """A refresh that timed out but was applied: the next refresh keeps the lock, not "lost"."""
    a = await KvCoordinator.create(js, owner="a-1-x", lock_ttl_s=1.5)  # refreshed every 0.5 s
    b = await KvCoordinator.create(js, owner="b-2-y", lock_ttl_s=1.5)
    key = "repo|core/x"
    async with contextlib.AsyncExitStack() as stack:
        if batch:
            lease = (await stack.enter_async_context(hold_all(a, [key]))).leases[key]
        else:
            lease = await stack.enter_async_context(a.path_lock(key))
        # the state such a refresh leaves: our owner at a revision the lease never heard of
        await a.locks.update(kv_key(key), b"a-1-x", last=lease.revision)
        await asyncio.sleep(1.3)
        assert lease.lost is None
        lease.check()
        with pytest.raises(TransientError, match="another replica"):
            async with b.path_lock(key):
                pass
