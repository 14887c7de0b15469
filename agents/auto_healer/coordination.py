"""Coordination between heals and between replicas: healed-id dedup, storm throttle, path locks.

The healer asks a `Coordinator`; the one-shot CLI uses `LocalCoordinator` (in memory), the
cluster agent `KvCoordinator` (NATS JetStream KV, entries with TTLs so a dead replica can never
block a path forever).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from auto_healer.errors import TransientError

BUCKET_LOCKS = "auto-healer-locks"
BUCKET_HEALED = "auto-healer-healed"
BUCKET_THROTTLE = "auto-healer-throttle"


def kv_key(*parts: str) -> str:
    """A KV-safe key for arbitrary text (paths, ids)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]


class Coordinator(Protocol):
    """What the healer needs to stay exact across heals and replicas."""

    async def healed_commit(self, injury_id: str) -> str | None:
        """The commit that already healed this injury id, if any."""
        ...

    async def mark_healed(self, injury_id: str, commit: str) -> None: ...

    async def claim_window(self, key: str, window_s: float) -> bool:
        """True for the first claim of `key` within `window_s`; later claims are throttled."""
        ...

    async def release_window(self, key: str) -> None: ...

    def path_lock(self, key: str) -> Any:
        """An async context manager; raises `TransientError` when another heal holds it."""
        ...


class LocalCoordinator:
    """In-process coordination with bounded memory (entries expire, oldest evicted first)."""

    def __init__(self, *, max_entries: int = 10_000, healed_ttl_s: float = 7 * 86400) -> None:
        self.max_entries = max_entries
        self.healed_ttl_s = healed_ttl_s
        self._healed: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._windows: OrderedDict[str, float] = OrderedDict()  # key -> expiry
        self._locks: dict[str, asyncio.Lock] = {}

    def _trim(self, table: OrderedDict[str, Any]) -> None:
        while len(table) > self.max_entries:
            table.popitem(last=False)

    async def healed_commit(self, injury_id: str) -> str | None:
        entry = self._healed.get(injury_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def mark_healed(self, injury_id: str, commit: str) -> None:
        self._healed[injury_id] = (time.monotonic() + self.healed_ttl_s, commit)
        self._trim(self._healed)

    async def claim_window(self, key: str, window_s: float) -> bool:
        now = time.monotonic()
        expiry = self._windows.get(key)
        if expiry is not None and expiry > now:
            return False
        self._windows.pop(key, None)
        self._windows[key] = now + window_s
        self._trim(self._windows)
        return True

    async def release_window(self, key: str) -> None:
        self._windows.pop(key, None)

    @asynccontextmanager
    async def path_lock(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]


class KvCoordinator:
    """Coordination through NATS KV buckets shared by every replica."""

    def __init__(self, locks: Any, healed: Any, throttle: Any, *, owner: str,
                 lock_ttl_s: float = 300.0, lock_wait_s: float = 0.0) -> None:
        self.locks, self.healed, self.throttle = locks, healed, throttle
        self.owner = owner
        self.lock_ttl_s = lock_ttl_s
        self.lock_wait_s = lock_wait_s
        self.local = LocalCoordinator()  # in-process locks first: cheap and fair

    @classmethod
    async def create(cls, js: Any, *, owner: str, lock_ttl_s: float = 300.0,
                     lock_wait_s: float = 0.0, healed_ttl_s: float = 7 * 86400) -> KvCoordinator:
        """Open (or create) the three buckets."""
        locks = await _bucket(js, BUCKET_LOCKS, ttl_s=lock_ttl_s)
        healed = await _bucket(js, BUCKET_HEALED, ttl_s=healed_ttl_s)
        throttle = await _bucket(js, BUCKET_THROTTLE, ttl_s=7 * 86400)
        return cls(locks, healed, throttle, owner=owner, lock_ttl_s=lock_ttl_s,
                   lock_wait_s=lock_wait_s)

    async def healed_commit(self, injury_id: str) -> str | None:
        from nats.js.errors import KeyNotFoundError

        known = await self.local.healed_commit(injury_id)
        if known:
            return known
        try:
            entry = await self.healed.get(kv_key(injury_id))
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def mark_healed(self, injury_id: str, commit: str) -> None:
        await self.local.mark_healed(injury_id, commit)
        await self.healed.put(kv_key(injury_id), commit.encode())

    async def claim_window(self, key: str, window_s: float) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        if not await self.local.claim_window(key, window_s):
            return False  # this replica claimed it already: no round trip needed
        try:
            await self.throttle.create(kv_key(key), self.owner.encode(), msg_ttl=window_s)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def release_window(self, key: str) -> None:
        await self.local.release_window(key)
        await self.throttle.purge(kv_key(key))

    @asynccontextmanager
    async def path_lock(self, key: str) -> AsyncIterator[None]:
        from nats.js.errors import KeyWrongLastSequenceError

        async with self.local.path_lock(key):
            deadline = time.monotonic() + self.lock_wait_s
            while True:
                try:
                    await self.locks.create(kv_key(key), self.owner.encode(),
                                            msg_ttl=self.lock_ttl_s)
                    break
                except KeyWrongLastSequenceError:
                    if time.monotonic() >= deadline:
                        raise TransientError(
                            "another replica is healing this path right now") from None
                    await asyncio.sleep(0.2)
            try:
                yield
            finally:
                await asyncio.shield(self.locks.purge(kv_key(key)))


async def _bucket(js: Any, name: str, *, ttl_s: float) -> Any:
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=name, ttl=ttl_s, history=1)
