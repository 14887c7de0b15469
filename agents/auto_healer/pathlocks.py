"""The path locks of a whole batch, taken together.

Every path is asked for at once, without waiting: a batch of 200 paths costs one round trip to
the store, not 200 in a row. Only when some path is busy (another heal holds it) are the rest
taken the old way: in sorted order, waiting, after giving back every lock that sorts after the
first busy path, so a replica never waits for a path while holding one that sorts after it and
two replicas can never wait on each other. A path whose lock was not taken is reported with why;
nothing is healed on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from auto_healer.coordination import Coordinator, Lease, PathBusy
from auto_healer.errors import TransientError

_Lock = AbstractAsyncContextManager[Lease]


@dataclass
class Locks:
    """The leases held, by path key, and why each other path was not locked."""

    leases: dict[str, Lease] = field(default_factory=dict)
    failed: dict[str, TransientError] = field(default_factory=dict)

    def why_not(self, key: str) -> str:
        return str(self.failed.get(key, "the path lock was not taken"))


@asynccontextmanager
async def path_locks(coordinator: Coordinator, keys: Iterable[str]) -> AsyncIterator[Locks]:
    """Hold the lock of every key that can be had; let go of them all at once on exit."""
    ordered = sorted(set(keys))
    held: dict[str, _Lock] = {}
    locks = Locks()

    async def take(key: str, *, wait: bool) -> None:
        lock = coordinator.path_lock(key, wait=wait)
        locks.leases[key] = await lock.__aenter__()
        held[key] = lock  # at once: a batch cut off meanwhile still lets go of it

    try:
        tried = await asyncio.gather(
            *(take(key, wait=False) for key in ordered), return_exceptions=True
        )
        for key, got in zip(ordered, tried, strict=True):
            if isinstance(got, TransientError):
                locks.failed[key] = got
            elif isinstance(got, BaseException):
                raise got  # a bug, or cut off
        busy = min((k for k, e in locks.failed.items() if isinstance(e, PathBusy)), default=None)
        if busy is not None:
            later = [k for k in held if k > busy]
            await _release([held.pop(k) for k in later])
            for key in later:
                del locks.leases[key]
            for key in (k for k in ordered if k >= busy):
                try:
                    await take(key, wait=True)
                    locks.failed.pop(key, None)
                except TransientError as exc:
                    locks.failed[key] = exc
        yield locks
    finally:
        await _release(list(held.values()))


async def _release(locks: list[_Lock]) -> None:
    await asyncio.gather(
        *(lock.__aexit__(None, None, None) for lock in locks), return_exceptions=True
    )
