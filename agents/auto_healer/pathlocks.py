"""The path locks of a batch, taken together: `hold_all(coordinator, keys)`.

A batch heals hundreds of paths in one commit and holds the lock of each until its push is
done. One lock after another costs a KV round trip each before the batch can start; here every
lock of the batch is asked for at once (nats-py sends them in one write and the answers come
back together) and ONE task keeps all of them fresh, not one task per lock.

Never two replicas waiting on each other: when a lock is busy and `lock_wait_s` lets us wait,
the locks taken above the first busy key are let go and the rest are taken one by one in sorted
order, as `Coordinator.path_lock` callers do. A coordinator other than `KvCoordinator` (the
one-shot's `LocalCoordinator`) takes its locks one by one through `path_lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from auto_healer.coordination import (
    BUCKET_LOCKS,
    BUSY,
    Coordinator,
    KvCoordinator,
    Lease,
    kv_key,
)
from auto_healer.errors import TransientError
from auto_healer.ownlocks import kept_own, take_lock

LetGo = Callable[[str, int], Awaitable[None]]  # (the KV key of a lock, its revision)


@dataclass
class Held:
    """What `hold_all` got: a lease for each key it holds, the error of each it could not."""

    leases: dict[str, Lease] = field(default_factory=dict)
    failed: dict[str, TransientError] = field(default_factory=dict)


@asynccontextmanager
async def hold_all(coordinator: Coordinator, keys: Sequence[str]) -> AsyncIterator[Held]:
    """Hold the path lock of every key (in sorted order); let go of them all on exit."""
    wanted = sorted(set(keys))
    async with AsyncExitStack() as stack:
        if isinstance(coordinator, KvCoordinator):
            yield await _KvLocks.enter(stack, coordinator, wanted)
            return
        held = Held()
        for key in wanted:
            try:
                held.leases[key] = await stack.enter_async_context(coordinator.path_lock(key))
            except TransientError as exc:
                held.failed[key] = exc
        yield held


def let_go_by(publish: Any) -> LetGo:
    """How a batch lets go of a lock of `BUCKET_LOCKS`, given the connection's `publish`: the
    delete `kv.delete(key, last=revision)` makes, published with no reply asked. Its answer
    was never used (at worst a lock expires by itself), and the next batch's locks are
    published after it on the same connection, so they find it gone."""
    from nats.js.api import Header
    from nats.js.kv import KV_DEL, KV_OP

    async def let_go(key: str, revision: int) -> None:
        headers = {KV_OP: KV_DEL, Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)}
        await publish(f"$KV.{BUCKET_LOCKS}.{key}", b"", headers=headers)

    return let_go


class _KvLocks:
    """The KV locks of one batch: taken together, refreshed by one task, released together."""

    def __init__(self, coord: KvCoordinator) -> None:
        self.coord = coord
        self.held = Held()
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    async def enter(cls, stack: AsyncExitStack, coord: KvCoordinator, keys: list[str]) -> Held:
        locks = cls(coord)
        for key in keys:  # this replica's own locks first (no round trip), in sorted order
            await stack.enter_async_context(coord.local.path_lock(key))
        stack.push_async_callback(locks._release)
        await locks._take(keys)
        locks._keep_fresh()
        return locks.held

    async def _create(self, key: str) -> int:
        return await take_lock(self.coord, kv_key(key))

    async def _take(self, keys: list[str]) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        sent = time.monotonic()
        answers = await asyncio.gather(*(self._create(k) for k in keys), return_exceptions=True)
        busy: list[str] = []
        for key, answer in zip(keys, answers, strict=True):
            if isinstance(answer, int):
                self._got(key, answer, sent)
            elif isinstance(answer, KeyWrongLastSequenceError):
                busy.append(key)
            elif isinstance(answer, TransientError):
                self.held.failed[key] = answer
            else:
                raise answer
        if not busy:
            return
        if self.coord.lock_wait_s <= 0:
            self.held.failed |= {key: TransientError(BUSY) for key in busy}
            return
        # Wait in sorted order only, holding nothing above the key waited for.
        later = [k for k in self.held.leases if k > busy[0]]
        await self._let_go(later)
        # The locks kept are refreshed while the busy ones are waited for: a wait past the
        # TTL would let them expire in the store (and the batch fail for nothing).
        self._keep_fresh()
        for key in sorted([*busy, *later]):
            try:
                self._got(key, *await self._wait_for(key))
            except TransientError as exc:
                self.held.failed[key] = exc

    async def _wait_for(self, key: str) -> tuple[int, float]:
        """The lock's revision once taken, and when the write that took it was sent."""
        from nats.js.errors import KeyWrongLastSequenceError

        deadline = time.monotonic() + self.coord.lock_wait_s
        while True:
            try:
                sent = time.monotonic()
                return await self._create(key), sent
            except KeyWrongLastSequenceError:
                if time.monotonic() >= deadline:
                    raise TransientError(BUSY) from None
                await asyncio.sleep(0.2)

    def _keep_fresh(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh())

    def _got(self, key: str, revision: int, sent: float) -> None:
        lease = Lease(self.coord.lock_ttl_s)
        lease.revision = revision
        lease.written(sent)
        self.held.leases[key] = lease

    async def _refresh(self) -> None:
        """Rewrite every lock every third of the TTL (as `KvCoordinator._refresh` does for one);
        a lock that cannot be refreshed past the TTL, or has another owner, is lost."""
        from nats.js.errors import KeyWrongLastSequenceError

        ttl_s, owner = self.coord.lock_ttl_s, self.coord.owner.encode()
        last_ok = dict.fromkeys(self.held.leases, time.monotonic())
        while True:
            await asyncio.sleep(ttl_s / 3)
            live = [(k, ls) for k, ls in self.held.leases.items() if not ls.lost]
            sent = time.monotonic()
            for key, _lease in live:  # taken since the last round (waited for)
                last_ok.setdefault(key, sent)
            answers = await asyncio.gather(
                *(self.coord.locks.update(kv_key(k), owner, last=ls.revision) for k, ls in live),
                return_exceptions=True,
            )
            for (key, lease), answer in zip(live, answers, strict=True):
                if isinstance(answer, int):
                    lease.revision, last_ok[key] = answer, time.monotonic()
                    lease.written(sent)
                elif isinstance(answer, KeyWrongLastSequenceError):
                    if await kept_own(self.coord, kv_key(key), lease):
                        last_ok[key] = time.monotonic()
                    else:
                        lease.lost = "the path lock was taken over by another replica"
                elif time.monotonic() - last_ok.get(key, 0.0) >= ttl_s:
                    lease.lost = f"the path lock could not be refreshed: {answer!r}"

    async def _let_go(self, keys: list[str]) -> None:
        """Delete our locks on `keys` (never one another replica has taken since: `last`)."""
        leases = [(k, self.held.leases.pop(k)) for k in keys]
        deletes = (
            self.coord.locks.delete(kv_key(k), last=ls.revision) for k, ls in leases if not ls.lost
        )
        # at worst a lock expires by itself after its TTL
        await asyncio.shield(asyncio.gather(*deletes, return_exceptions=True))

    async def _release(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        let_go = self.coord.let_go
        if let_go is None:
            await self._let_go(list(self.held.leases))
            return
        leases, self.held.leases = self.held.leases, {}
        for key, lease in leases.items():
            if not lease.lost:  # never release a lock another replica has taken since
                with contextlib.suppress(Exception):  # at worst it expires by itself
                    await let_go(kv_key(key), lease.revision)
