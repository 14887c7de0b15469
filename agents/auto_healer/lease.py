"""A held path lock as a heal sees it: `Lease.check()` before every push."""

from __future__ import annotations

import math
import time

from auto_healer.errors import TransientError

LAPSED = "the path lock's TTL ran out with no refresh the coordination store took"


class Lease:
    """A held path lock. `check()` raises `TransientError` once the lock was lost, or once its
    TTL has run out since the last write of it the store took, so a heal never pushes without
    it (a refresh that hangs while the store is down marks it lost only when it gives up)."""

    def __init__(self, ttl_s: float = math.inf) -> None:
        self.lost: str | None = None
        self.revision = 0
        self.ttl_s = ttl_s
        self.held_until = math.inf

    def written(self, sent_at: float) -> None:
        """The store took a write of the lock sent at `sent_at` (monotonic): it expires no
        sooner than the TTL after that, since the store counts from when it got it."""
        self.held_until = sent_at + self.ttl_s

    def check(self) -> None:
        if self.lost:
            raise TransientError(self.lost)
        if time.monotonic() >= self.held_until:
            raise TransientError(LAPSED)
