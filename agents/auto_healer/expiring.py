"""Bounded in-memory tables whose entries expire, small per entry (`LocalCoordinator`'s).

The local coordinator keeps up to `max_entries` healed ids and throttle windows each (10,000 by
default), and a long-running agent fills them. Kept as a string key and a `(float, str)` tuple,
a throttle window cost ~360 bytes (its key alone, repository URL, type and path, ~140). Here a
key is its 16-byte BLAKE2b digest (distinct keys stay apart: a collision among 10,000 keys has
a chance of ~2^-102) and the value one bytes object, the expiry then the text: ~200 bytes an
entry with the table. Order and eviction are as before: the entry put last is the newest, and
beyond the bound the oldest put goes first.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import OrderedDict

_EXPIRY = struct.Struct("<d")  # time.monotonic() of expiry, exactly as the float it was


def digest(key: str) -> bytes:
    """The 16-byte table key of a string key (any string: lone surrogates too)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ExpiringTable:
    """`key -> text` until an expiry, at most `max_entries`, the oldest put evicted first."""

    __slots__ = ("_last", "_rows", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._rows: OrderedDict[bytes, bytes] = OrderedDict()
        self._last = ("", digest(""))

    def _key(self, key: str) -> bytes:
        last_key, last_digest = self._last
        if key is last_key:  # a read then a write of one key (a throttle claim): hashed once
            return last_digest
        self._last = (key, found := digest(key))
        return found

    def get(self, key: str) -> str | None:
        """The text under `key` if it has not expired, else None."""
        row = self._rows.get(self._key(key))
        if row is None or _EXPIRY.unpack_from(row)[0] <= time.monotonic():
            return None
        return row[_EXPIRY.size :].decode("utf-8", "surrogatepass")

    def put(self, key: str, ttl_s: float, text: str) -> None:
        """Hold `text` under `key` for `ttl_s` from now, as the newest entry."""
        row = _EXPIRY.pack(time.monotonic() + ttl_s) + text.encode("utf-8", "surrogatepass")
        rows, found = self._rows, self._key(key)
        rows.pop(found, None)
        rows[found] = row
        while len(rows) > self.max_entries:
            rows.popitem(last=False)

    def pop(self, key: str) -> None:
        """Forget `key` (absent is fine)."""
        self._rows.pop(self._key(key), None)

    def clear(self) -> None:
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)
