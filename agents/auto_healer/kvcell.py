"""One KV bucket as compare-and-set cells and a change feed: what the operator controls
(`controls`, `breaker`, `approvals`, `recurrence`) need of NATS, so that they know none."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from auto_healer.assets import open_bucket
from auto_healer.coordination import StoreHealth


class KvCell:
    """One KV bucket as compare-and-set cells and a change feed, for the operator controls
    (`controls`, `breaker`), which must not know NATS. Store failures raise `TransientError`."""

    def __init__(self, kv: Any, health: StoreHealth | None = None) -> None:
        self.kv = kv
        # one the coordinator watches: /readyz and the store gauge then say when it does not answer
        self._store = (health or StoreHealth()).store

    @classmethod
    async def open(
        cls,
        js: Any,
        bucket: str,
        *,
        ttl_s: float = 0.0,
        replicas: int = 1,
        health: StoreHealth | None = None,
    ) -> KvCell:
        return cls(await open_bucket(js, bucket, ttl_s=ttl_s, replicas=replicas), health)

    async def read(self, key: str) -> tuple[bytes, int] | None:
        """The value and revision of `key`, or None when it has none (never set, deleted)."""
        from nats.js.errors import KeyNotFoundError

        try:
            async with self._store("read a control"):
                entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return (entry.value or b"", int(entry.revision or 0))

    async def swap(self, key: str, value: bytes, revision: int | None) -> bool:
        """Write `value` if `key` is still at `revision` (None: if it has no value); False when
        another writer came first."""
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            async with self._store("write a control"):
                if revision is None:
                    await self.kv.create(key, value)
                else:
                    await self.kv.update(key, value, last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def put(self, key: str, value: bytes) -> None:
        async with self._store("write a control"):
            await self.kv.put(key, value)

    async def delete(self, key: str) -> None:
        async with self._store("delete a control"):
            await self.kv.delete(key)

    async def changes(self) -> AsyncIterator[tuple[str, bytes | None]]:
        """Every key's current value, then each change as it happens; None for a deleted key.
        The end of the current values is marked by ("", None)."""
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    yield ("", None)
                elif entry.operation in ("DEL", "PURGE"):
                    yield (entry.key, None)
                else:
                    yield (entry.key, entry.value or b"")
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
