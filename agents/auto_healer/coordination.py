"""Coordination between heals and between replicas: healed-id dedup, storm throttle, path locks.

The healer asks a `Coordinator`; the one-shot CLI uses `LocalCoordinator` (in memory), the
cluster agent `KvCoordinator` (NATS JetStream KV, entries with TTLs so a dead replica can never
block a path forever). A store that does not answer raises `CoordinationUnavailable`, and the
coordinator says it is `degraded()` until the store answers again (readiness and a gauge).
Heal attempts that really failed are counted per injury id (`count_attempt`): the agent's heal
budget, which an outage never uses up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from auto_healer.assets import (
    BUCKET_HEALED,
    BUCKET_LOCKS,
    BUCKET_THROTTLE,
    BUCKETS,
    HEALED_TTL_S,
    open_buckets,
)
from auto_healer.errors import TransientError
from auto_healer.expiring import ExpiringTable, digest
from auto_healer.kvstore import StoreHealth, kv_key
from auto_healer.lease import Lease
from auto_healer.ownlocks import kept_own, take_lock

__all__ = [
    "BUCKETS",
    "BUCKET_HEALED",
    "BUCKET_LOCKS",
    "BUCKET_THROTTLE",
    "KvCoordinator",
    "Lease",
    "StoreHealth",
    "kv_key",
]


BUSY = "another replica is healing this path right now"


class Coordinator(Protocol):
    """What the healer needs to stay exact across heals and replicas.

    Failures of the shared store raise `TransientError`: the injury is then retried, never
    dropped.
    """

    async def healed_commit(self, injury_id: str) -> str | None:
        """The commit that already healed this injury id, if any."""
        ...

    async def mark_healed(self, injury_id: str, commit: str) -> None: ...

    async def claim_window(self, key: str, window_s: float, claimant: str) -> bool:
        """False when another injury claimed `key` within `window_s` (storm control).

        The same claimant (a redelivered injury) may always claim again: a replica that died
        after claiming must not throttle the retry of its own injury.
        """
        ...

    async def release_window(self, key: str, claimant: str) -> None:
        """Let go of the window on `key` while `claimant` holds it (after a window that ran out
        during its heal, another injury may hold it: that claim is kept)."""
        ...

    def path_lock(self, key: str) -> Any:
        """An async context manager yielding a `Lease`; raises `TransientError` when another
        heal holds the path."""
        ...

    async def count_attempt(self, injury_id: str) -> int:
        """Count one failed heal attempt of this injury id; returns the count so far."""
        ...

    def degraded(self) -> str | None:
        """Why the shared store is not answering now, or None when it is fine."""
        ...


class LocalCoordinator:
    """In-process coordination with bounded memory (entries expire, oldest evicted first)."""

    def __init__(self, *, max_entries: int = 10_000, healed_ttl_s: float = 7 * 86400) -> None:
        self.max_entries = max_entries
        self.healed_ttl_s = healed_ttl_s
        self._healed = ExpiringTable(max_entries)  # injury id -> commit
        self._windows = ExpiringTable(max_entries)  # window key -> who holds it
        self._locks: dict[str, asyncio.Lock] = {}
        self._attempts: OrderedDict[bytes, int] = OrderedDict()  # digest of the id -> count

    async def healed_commit(self, injury_id: str) -> str | None:
        return self.healed_now(injury_id)

    def healed_now(self, injury_id: str) -> str | None:
        """`healed_commit`, without waiting."""
        return self._healed.get(injury_id)

    async def mark_healed(self, injury_id: str, commit: str) -> None:
        self._healed.put(injury_id, self.healed_ttl_s, commit)

    def window_holder(self, key: str) -> str | None:
        """Who holds the window on `key` now, if anyone."""
        return self._windows.get(key)

    def record_window(self, key: str, window_s: float, claimant: str) -> None:
        self._windows.put(key, window_s, claimant)

    async def claim_window(self, key: str, window_s: float, claimant: str) -> bool:
        holder = self.window_holder(key)
        if holder not in (None, claimant):
            return False
        self.record_window(key, window_s, claimant)
        return True

    async def release_window(self, key: str, claimant: str) -> None:
        if self.window_holder(key) == claimant:
            self._windows.pop(key)

    async def count_attempt(self, injury_id: str) -> int:
        key = digest(injury_id)
        count = self._attempts.pop(key, 0) + 1
        self._attempts[key] = count
        while len(self._attempts) > self.max_entries:
            self._attempts.popitem(last=False)
        return count

    def degraded(self) -> str | None:
        return None

    def lock_busy(self, key: str) -> bool:
        """Whether a heal holds, or waits for, the path lock on `key`."""
        return key in self._locks

    @asynccontextmanager
    async def path_lock(self, key: str) -> AsyncIterator[Lease]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield Lease()
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]


class KvCoordinator:
    """Coordination through NATS KV buckets shared by every replica."""

    def __init__(
        self,
        locks: Any,
        healed: Any,
        throttle: Any,
        *,
        owner: str,
        lock_ttl_s: float = 60.0,
        lock_wait_s: float = 0.0,
    ) -> None:
        self.locks, self.healed, self.throttle = locks, healed, throttle
        self.owner, self.lock_ttl_s, self.lock_wait_s = owner, lock_ttl_s, lock_wait_s
        self.local = LocalCoordinator()  # a cache of what this replica knows, and its locks
        self.cache_s = 1.0
        self.health = StoreHealth()
        self.watched: list[StoreHealth] = []
        self._store = self.health.store
        self.let_go: Callable[[str, int], Awaitable[None]] | None = None  # `pathlocks.let_go_by`

    def degraded(self) -> str | None:
        """The store's outage, this coordinator's buckets first, then those it `watch`es."""
        for health in (self.health, *self.watched):
            if (why := health.degraded()) is not None:
                return why
        return None

    def watch(self, health: StoreHealth) -> None:
        """Say the outage of other buckets too (the controls'), each judged by its own calls:
        one bucket answering never clears another's outage."""
        self.watched.append(health)

    async def count_attempt(self, injury_id: str) -> int:
        """Kept in the healed-ids bucket (a read and a write: only after a failed heal, and
        one heal of an id runs at a time under its path lock)."""
        from nats.js.errors import KeyNotFoundError

        key = kv_key("attempts", injury_id)
        count = 0
        try:
            async with self._store("read heal attempts"):
                entry = await self.healed.get(key)
            count = int((entry.value or b"0").decode() or 0)
        except KeyNotFoundError:
            pass
        async with self._store("count a heal attempt"):
            await self.healed.put(key, str(count + 1).encode())
        return count + 1

    @classmethod
    async def create(
        cls,
        js: Any,
        *,
        owner: str,
        lock_ttl_s: float = 60.0,
        lock_wait_s: float = 0.0,
        healed_ttl_s: float = HEALED_TTL_S,
        replicas: int = 1,
    ) -> KvCoordinator:
        """Open (or create, with `replicas`) the three buckets; the lock bucket's max age is
        the lock TTL."""
        locks, healed, throttle = await open_buckets(
            js, lock_ttl_s=lock_ttl_s, healed_ttl_s=healed_ttl_s, replicas=replicas
        )
        return cls(
            locks, healed, throttle, owner=owner, lock_ttl_s=lock_ttl_s, lock_wait_s=lock_wait_s
        )

    async def healed_commit(self, injury_id: str) -> str | None:
        from nats.js.errors import KeyNotFoundError

        known = await self.local.healed_commit(injury_id)
        if known:
            return known
        try:
            async with self._store("read healed ids"):
                entry = await self.healed.get(kv_key(injury_id))
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def mark_healed(self, injury_id: str, commit: str) -> None:
        await self.local.mark_healed(injury_id, commit)
        async with self._store("record a healed id"):
            await self.healed.put(kv_key(injury_id), commit.encode())

    async def claim_window(self, key: str, window_s: float, claimant: str) -> bool:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        holder = self.local.window_holder(key)
        if holder not in (None, claimant):
            return False  # seen within the last second: no round trip for a storm
        holder = claimant
        try:
            async with self._store("claim a throttle window"):
                await self.throttle.create(kv_key(key), claimant.encode(), msg_ttl=window_s)
        except KeyWrongLastSequenceError:
            try:
                async with self._store("read a throttle window"):
                    entry = await self.throttle.get(kv_key(key))
                holder = (entry.value or b"").decode()
            except KeyNotFoundError:
                return False  # expired this instant; the next duplicate will claim it
        # Cache briefly only: another replica may release the window when its heal fails.
        self.local.record_window(key, min(window_s, self.cache_s), holder)
        return holder == claimant

    async def release_window(self, key: str, claimant: str) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        await self.local.release_window(key, claimant)
        try:
            async with self._store("release a throttle window"):
                entry = await self.throttle.get(kv_key(key))
                if entry.value == claimant.encode():  # deleted only while still that claim
                    await self.throttle.delete(kv_key(key), last=entry.revision)
        except (KeyNotFoundError, KeyWrongLastSequenceError):
            pass  # it ran out, or another injury claimed it since

    @asynccontextmanager
    async def path_lock(self, key: str) -> AsyncIterator[Lease]:
        """Hold the path in KV; the bucket's max age is the TTL, refreshed while we hold it."""
        from nats.js.errors import KeyWrongLastSequenceError

        async with self.local.path_lock(key) as lease:
            lease.ttl_s = self.lock_ttl_s
            deadline = time.monotonic() + self.lock_wait_s
            while True:
                try:
                    sent = time.monotonic()
                    lease.revision = await take_lock(self, kv_key(key))
                    lease.written(sent)
                    break
                except KeyWrongLastSequenceError:
                    if time.monotonic() >= deadline:
                        raise TransientError(BUSY) from None
                    await asyncio.sleep(0.2)
            refresher = asyncio.create_task(self._refresh(kv_key(key), lease))
            try:
                yield lease
            finally:
                refresher.cancel()
                if not lease.lost:  # never release a lock another replica has taken since
                    with contextlib.suppress(Exception):  # at worst it expires by itself
                        await asyncio.shield(self.locks.delete(kv_key(key), last=lease.revision))

    async def _refresh(self, key: str, lease: Lease) -> None:
        """Rewrite the lock every third of its TTL so a long heal keeps it, a dead one loses it.
        A refresh that keeps failing past the TTL, or finds another owner, marks the lease lost."""
        from nats.js.errors import KeyWrongLastSequenceError

        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.lock_ttl_s / 3)
            try:
                sent = time.monotonic()
                lease.revision = await self.locks.update(
                    key, self.owner.encode(), last=lease.revision
                )
                lease.written(sent)
                last_ok = time.monotonic()
            except KeyWrongLastSequenceError:
                if await kept_own(self, key, lease):
                    last_ok = time.monotonic()
                    continue
                lease.lost = "the path lock was taken over by another replica"
                return
            except Exception as exc:  # a hiccup: try again soon, until the TTL runs out
                if time.monotonic() - last_ok >= self.lock_ttl_s:
                    lease.lost = (
                        f"the path lock could not be refreshed: {exc or type(exc).__name__}"
                    )
                    return
