"""What every KV adapter shares: the keys it stores under, and whether the store answers.

Split from `coordination` (its size). Both run once or more per injury on the agent's event
loop, so they are kept cheap: a key is hashed once while it is in use, and `StoreHealth.store`
is a plain context manager, not a generator.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from types import TracebackType

from auto_healer.errors import CoordinationUnavailable, TransientError

KEY_CACHE = 4096  # keys of the injuries and paths in flight; bounded, oldest dropped first


@functools.lru_cache(maxsize=KEY_CACHE)
def kv_key(*parts: str) -> str:
    """A KV-safe key for arbitrary text (paths, ids)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]


class StoreHealth:
    """Whether the KV store answered last time: set by every call through `store()`."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.last_error = ""

    def degraded(self) -> str | None:
        if self.down_since is None:
            return None
        since = time.monotonic() - self.down_since
        return f"coordination store unavailable for {since:.0f}s: {self.last_error}"

    def store(self, doing: str) -> _Call:
        """Map a failure of the KV store (not a KV answer) to `CoordinationUnavailable`."""
        return _Call(self, doing)


class _Call:
    """One call to the KV store, as `async with health.store("doing what"):`."""

    __slots__ = ("doing", "health")

    def __init__(self, health: StoreHealth, doing: str) -> None:
        self.health, self.doing = health, doing

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        health = self.health
        if exc is None:
            health.down_since = None
            return
        if isinstance(exc, TransientError | asyncio.CancelledError) or not isinstance(
            exc, Exception
        ):
            return
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        if isinstance(exc, KeyNotFoundError | KeyWrongLastSequenceError):
            health.down_since = None  # an answer: the store is up
            return
        why = f"{exc or type(exc).__name__}"
        if health.down_since is None:
            health.down_since = time.monotonic()
        health.last_error = f"{self.doing}: {why}"[:300]
        raise CoordinationUnavailable(
            f"coordination store unavailable ({self.doing}): {why}"
        ) from None
