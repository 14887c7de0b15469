"""Operator controls shared by every replica: the fleet-wide pause, kept in a KV bucket.

`auto-healer pause` writes a pause (everything, or one playbook) to the `auto-healer-controls`
bucket; every replica mirrors the bucket through a watch, so it honours the pause as soon as the
change arrives (well under the 2 s promised). The mirror answers `paused(playbook)` without a
round trip. The KV object comes from `kvcell.KvCell`: this module knows no NATS.

What a pause does to an injury is not decided here: the `Guard` (see `guard`) turns it into a
`held` outcome, and `decision.decide()` says how that is settled (JetStream: back into the
stream; core NATS: escalated, since core NATS cannot hold a message).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog

from auto_healer.coordination import kv_key

log = structlog.get_logger("auto_healer.controls")
BUCKET_CONTROLS = "auto-healer-controls"
PAUSE_ALL = "pause"
BREAKER_PREFIX = "breaker."
APPROVAL_PREFIX = "approval."


class Cells(Protocol):
    """What the controls need of a KV bucket (`kvcell.KvCell`)."""

    async def read(self, key: str) -> tuple[bytes, int] | None: ...

    async def swap(self, key: str, value: bytes, revision: int | None) -> bool: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...

    def changes(self) -> AsyncIterator[tuple[str, bytes | None]]: ...


@dataclass(frozen=True)
class Pause:
    """Who paused what, why and since when."""

    by: str
    reason: str
    since: float
    playbook: str | None = None  # None: every playbook

    def describe(self) -> str:
        what = f"playbook {self.playbook!r}" if self.playbook else "auto-healer"
        why = f": {self.reason}" if self.reason else ""
        return f"{what} paused by {self.by}{why}"


def pause_key(playbook: str | None) -> str:
    """The KV key of a pause: one for everything, one per playbook (its name hashed, any text)."""
    return PAUSE_ALL if playbook is None else f"{PAUSE_ALL}.{kv_key(playbook)}"


async def pause(cells: Cells, *, by: str, reason: str, playbook: str | None) -> Pause:
    """Pause every replica (or one playbook on every replica)."""
    state = Pause(by=by, reason=reason, since=time.time(), playbook=playbook)
    await cells.put(pause_key(playbook), json.dumps(asdict(state)).encode())
    return state


async def resume(cells: Cells, *, playbook: str | None) -> None:
    """Lift a pause (of everything, or of one playbook)."""
    await cells.delete(pause_key(playbook))


class Controls:
    """This replica's mirror of the controls bucket, kept current by a watch.

    `changed` is set on every change, so the intake gate (`gate_intake`) reacts at once.
    """

    def __init__(self, cells: Cells | None) -> None:
        self.cells = cells
        self._pauses: dict[str, Pause] = {}
        self.breakers: dict[str, dict[str, Any]] = {}  # repo key -> the breaker's state
        self.approvals: dict[str, bytes] = {}  # approval key -> the request (see `approvals`)
        self.changed = asyncio.Event()
        self.approvals_seen = asyncio.Event()  # an approval request changed
        self.synced = asyncio.Event()  # set once the current values were read

    def paused(self, playbook: str | None = None) -> Pause | None:
        """The pause that applies: everything, else this playbook's."""
        found = self._pauses.get(PAUSE_ALL)
        if found is None and playbook is not None:
            found = self._pauses.get(pause_key(playbook))
        return found

    def details(self) -> dict[str, Any]:
        """What the heartbeat says about the controls."""
        everything = self._pauses.get(PAUSE_ALL)
        out: dict[str, Any] = {"paused": everything is not None}
        if everything is not None:
            out["paused_by"], out["paused_reason"] = everything.by, everything.reason
            out["paused_since"] = everything.since
        playbooks = sorted(p.playbook for p in self._pauses.values() if p.playbook)
        if playbooks:
            out["paused_playbooks"] = playbooks
        return out

    def apply(self, key: str, value: bytes | None) -> None:
        """One change of the bucket, as the watch saw it."""
        if key.startswith(APPROVAL_PREFIX):
            if value is None or b'"state": "done"' in value or b'"state": "closed"' in value:
                self.approvals.pop(key, None)  # nothing left to do: not kept in memory
            else:
                self.approvals[key] = value
            self.approvals_seen.set()
        elif key.startswith(BREAKER_PREFIX):
            repo = key[len(BREAKER_PREFIX) :]
            if value is None:
                self.breakers.pop(repo, None)
            else:
                with contextlib.suppress(ValueError):
                    self.breakers[repo] = json.loads(value)
        elif key == PAUSE_ALL or key.startswith(PAUSE_ALL + "."):
            if value is None:
                self._pauses.pop(key, None)
            else:
                try:
                    self._pauses[key] = Pause(**json.loads(value))
                except (ValueError, TypeError):
                    log.warning("control_unreadable", key=key)
                    return
            log.info("control_changed", key=key, paused=value is not None)
        self.changed.set()

    async def watch(self) -> None:
        """Mirror the bucket until cancelled; a broken watch is opened again."""
        if self.cells is None:
            self.synced.set()
            return
        while True:
            try:
                seen: set[str] = set()
                async for key, value in self.cells.changes():
                    if key == "":  # the current values were all delivered
                        for gone in [k for k in self._pauses if k not in seen]:
                            self.apply(gone, None)
                        self.synced.set()
                        continue
                    seen.add(key)
                    self.apply(key, value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("controls_watch_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1.0)


async def gate_intake(
    slots: Any, closed: Callable[[], bool], changed: asyncio.Event, *, every_s: float = 1.0
) -> None:
    """JetStream mode: while `closed()` (paused, or the breaker open), hold every slot of the
    intake's gate (the one the JetStream source passes before each fetch, not the agent's heal
    slots, which the Hive's alerts share), so the source fetches nothing and the injuries wait
    in the stream, unfetched and uncounted against their deliveries. Runs until cancelled."""
    held = 0
    try:
        while True:
            if closed() and held < slots.size:
                # A heal in flight keeps its slot until it ends: take the rest as they free up,
                # looking again each second in case the intake opened meanwhile.
                with contextlib.suppress(TimeoutError):
                    held += await asyncio.wait_for(slots.reserve(slots.size - held), every_s)
                if held == slots.size:
                    log.info("intake_closed")
                continue
            if not closed() and held:
                slots.release(held)
                held = 0
                log.info("intake_opened")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), every_s)  # the breaker's window may end
    finally:
        if held:
            slots.release(held)
