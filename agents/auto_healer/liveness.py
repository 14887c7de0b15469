"""Liveness that means something: whether this process can still do its job.

The agent is alive while its event loop ticks and its NATS connection is usable: connected,
or reconnecting for less than `max_disconnected_s`. A connection that nats-py closed for good
(it does not reconnect after some server errors) is fatal at once. `/healthz` reports it, and
the agent then stops and exits non-zero, so the orchestrator restarts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Liveness:
    """Fed by the connection's callbacks and the agent's tick; read by `/healthz`."""

    def __init__(
        self,
        *,
        max_disconnected_s: float,
        stall_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_disconnected_s, self.stall_s, self.clock = max_disconnected_s, stall_s, clock
        self._tick = clock()
        self._down_since: float | None = None
        self._closed = False
        self._stopping = False
        self._lost: str | None = None

    def tick(self) -> None:
        self._tick = self.clock()

    def disconnected(self) -> None:
        if self._down_since is None:
            self._down_since = self.clock()

    def reconnected(self) -> None:
        self._down_since = None

    def closed(self) -> None:
        self._closed = True

    def lost(self, why: str) -> None:
        """Something this process needs is gone for good (its JetStream consumer): restart."""
        self._lost = why

    def stopping(self) -> None:
        """A close we asked for (drain at shutdown) is not a failure."""
        self._stopping = True

    def fatal(self) -> str | None:
        """Why this process should be restarted, or None."""
        if self._stopping:
            return None
        if self._closed:
            return "the NATS connection was closed and will not reconnect"
        if self._lost:
            return self._lost
        if self._down_since is not None:
            down = self.clock() - self._down_since
            if down > self.max_disconnected_s:
                limit = self.max_disconnected_s
                return f"NATS has been unreachable for {down:.0f}s (limit {limit:g}s)"
        return None

    def alive(self) -> bool:
        return self.fatal() is None and self.clock() - self._tick < self.stall_s
