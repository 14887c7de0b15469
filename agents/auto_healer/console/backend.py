"""What the console shows and does, on the agent's own connection and controls mirror.

The console's HTTP server is the metrics server: prometheus-client's threaded WSGI server, one
thread per request. NATS and the controls mirror live on the agent's asyncio loop, so each call
here runs a coroutine there (`asyncio.run_coroutine_threadsafe`) and waits for it with a bound:
no second connection, no second server, no async web framework to add.

Every write goes through `control_ops`, the calls the CLI commands make.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from auto_healer import approvals, breaker, control_ops, history
from auto_healer.controls import Cells, Controls
from auto_healer.encoding import decode
from auto_healer.heartbeat import SERVICE
from auto_healer.sources.dead_letters import DeadLetter, newest
from auto_healer.sources.nats_stream import read_with

T = TypeVar("T")
STALE_AFTER_BEATS = 3  # a replica not heard from for this many intervals is shown as silent
MAX_REPLICAS = 500  # replicas kept, the last heard: any Hive publisher can make up names
LATEST_TIMESTAMP = 1e11  # a heartbeat dated later (or NaN, inf) is dropped: no page can show it


@dataclass(frozen=True)
class Replica:
    """One replica as its last heartbeat described it."""

    name: str
    status: str
    at: float
    meta: dict[str, Any]

    def silent(self, interval_s: float, now: float) -> bool:
        return now - self.at > STALE_AFTER_BEATS * interval_s


@dataclass(frozen=True)
class Snapshot:
    """The controls as this replica's mirror holds them, and the replicas heard from."""

    pause: dict[str, Any]
    breakers: list[dict[str, Any]]
    approvals: list[approvals.Request]
    replicas: list[Replica]


class Beats:
    """The last heartbeat of each replica (by its `replica` name), kept on the loop."""

    def __init__(self) -> None:
        self.last: dict[str, Replica] = {}

    async def on_message(self, msg: Any) -> None:
        try:
            doc = decode(msg.data, dict(msg.headers or {}))
        except ValueError:
            return
        if doc.get("service") != SERVICE:  # the Hive's other services beat on this subject too
            return
        meta = doc.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        name = str(meta.get("replica") or "?")
        try:
            at = float(doc.get("timestamp") or time.time())
        except (TypeError, ValueError):
            return
        if not 0 <= at < LATEST_TIMESTAMP:  # NaN too: a beat at no time is no beat
            return
        self.last.pop(name, None)  # the dict's order is then the order last heard
        self.last[name] = Replica(name, str(doc.get("status", "")), at, meta)
        while len(self.last) > MAX_REPLICAS:
            del self.last[next(iter(self.last))]


class Backend:
    """Reads and writes of the console, each run on the agent's loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        nc: Any,
        cells: Cells,
        mirror: Controls,
        *,
        repo: str,
        limits: breaker.Limits,
        beats: Beats,
        timeout_s: float = 15.0,
        signing_key: bytes | None = None,
    ) -> None:
        self.signing_key = signing_key  # decisions signed, replays signed anew: agents verify
        self.loop, self.nc, self.js, self.cells = loop, nc, nc.jetstream(), cells
        self.mirror, self.repo, self.limits, self.beats = mirror, repo, limits, beats
        self.timeout_s = timeout_s

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run `make()` on the agent's loop and wait for it (at most `timeout_s`)."""

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(self.timeout_s)

    # -- reads --------------------------------------------------------------------------------

    def history(self, since_s: float) -> list[history.Entry]:
        """The history of the last `since_s` seconds, oldest first (as `auto-healer history`)."""
        since = datetime.now(UTC) - timedelta(seconds=since_s)
        deliveries = self.call(
            lambda: read_with(self.js, history.HISTORY_STREAM, since, subject="aura.hive.events.>")
        )
        return history.entries(deliveries)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self.call(lambda: newest(self.js, limit=limit))

    def snapshot(self) -> Snapshot:
        """A consistent copy of the mirror (taken on the loop, which alone changes it)."""

        async def take() -> Snapshot:
            now = time.time()
            breakers = []
            for key, doc in sorted(self.mirror.breakers.items()):
                shown = dict(doc)
                shown["key"] = key
                shown["open_now"] = breaker.is_open(doc, self.limits, now)
                breakers.append(shown)
            requests = [approvals.load(v) for v in self.mirror.approvals.values()]
            held = sorted((r for r in requests if r is not None), key=lambda r: r.requested_at)
            replicas = sorted(self.beats.last.values(), key=lambda r: r.name)
            pause = self.mirror.details()
            return Snapshot(pause, breakers, held, replicas)

        return self.call(take)

    # -- writes (the CLI's calls) ---------------------------------------------------------------

    def pause(self, *, by: str, reason: str, playbook: str | None) -> str:
        state = self.call(
            lambda: control_ops.pause(
                self.cells, self.nc, by=by, reason=reason, playbook=playbook, via="console"
            )
        )
        return state.describe()

    def resume(self, *, by: str, playbook: str | None) -> str:
        self.call(
            lambda: control_ops.resume(self.cells, self.nc, by=by, playbook=playbook, via="console")
        )
        return f"{'playbook ' + repr(playbook) if playbook else 'auto-healer'} resumed by {by}"

    def decide(
        self,
        injury_id: str,
        *,
        approve: bool,
        by: str,
        reason: str,
        fingerprint: str | None = None,
    ) -> str:
        request = self.call(
            lambda: control_ops.decide(
                self.cells,
                self.nc,
                injury_id,
                approve=approve,
                by=by,
                reason=reason,
                via="console",
                fingerprint=fingerprint,
                signing_key=self.signing_key,
            )
        )
        return f"injury {request.injury_id} {request.state} by {request.by}"

    def replay(self, seq: int, *, by: str) -> str:
        new_id, old = self.call(
            lambda: control_ops.replay(
                self.nc, self.js, seq, by=by, via="console", signing_key=self.signing_key
            )
        )
        return f"dead letter {seq} replayed as injury {new_id}" + (f" (was {old})" if old else "")

    def reset_breaker(self, repo: str, *, by: str) -> str:
        self.call(
            lambda: control_ops.reset_breaker(self.cells, self.nc, by=by, repo=repo, via="console")
        )
        return f"breaker of {repo} reset by {by}"
