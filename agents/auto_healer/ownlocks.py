"""Path locks this replica wrote itself but never heard back about.

A KV call that times out may still be applied: a NATS frozen past the KV timeout (a stalled
disk, a stopped VM, a GC pause) runs the requests it had buffered once it thaws. A path lock
created that way, or refreshed that way, is this replica's own, yet reads as another replica's
(`KeyWrongLastSequenceError`). Waited out, it cost up to `LOCK_TTL_S` of "another replica is
healing this path right now" with one replica; on a refresh it failed the heal. The owner is
unique to the process (`service`), and callers hold the key's local lock, so a lock with our
owner is never another heal's: it is taken back at its revision (compare-and-set).
"""

from __future__ import annotations

import time
from typing import Any

from auto_healer.lease import Lease


async def take_lock(coord: Any, key: str) -> int:
    """Write the path lock on `key` (a `kv_key`) for `coord` (a `KvCoordinator`); its revision.
    Our own orphan is taken back; another owner's lock raises `KeyWrongLastSequenceError`."""
    from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

    mine = coord.owner.encode()
    try:
        async with coord.health.store("take a path lock"):
            return int(await coord.locks.create(key, mine))
    except KeyWrongLastSequenceError as busy:
        try:
            async with coord.health.store("read a path lock"):
                entry = await coord.locks.get(key)
        except KeyNotFoundError:
            raise busy from None  # it expired this instant: taken on the next try
        if entry.value != mine:
            raise
    async with coord.health.store("take back a path lock"):
        return int(await coord.locks.update(key, mine, last=entry.revision))


async def kept_own(coord: Any, key: str, lease: Lease) -> bool:
    """A refresh found the lock (a `kv_key`) at another revision: True, and the lock rewritten,
    when that revision is ours; False when another replica wrote it, or the store does not say."""
    mine = coord.owner.encode()
    try:
        entry = await coord.locks.get(key)
        if entry.value != mine:
            return False
        sent = time.monotonic()
        lease.revision = int(await coord.locks.update(key, mine, last=entry.revision))
    except Exception:
        return False
    lease.written(sent)
    return True
