"""Where injuries come from: transport-neutral deliveries, and the sources that produce them.

A source (core NATS, JetStream, a file) turns what its transport received into a `Delivery`:
the bytes, the headers, which attempt this is, when it was first delivered, and a `Settler`
that acks, naks, terminates or extends it. Everything after the source sees only deliveries;
only the modules in this package know the transport. `decision.decide()` says how a delivery is
settled, and `effects.Effects` settles it, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from auto_healer.contracts import msg_id_of

__all__ = ["NO_SETTLE", "Delivery", "Settler", "Slots", "Source", "Submit"]


class Settler(Protocol):
    """How a transport settles one message."""

    async def ack(self) -> None: ...

    async def nak(self, delay_s: float) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...


class _NoSettle:
    """A transport with nothing to settle (core NATS, a file): every call does nothing."""

    async def ack(self) -> None:
        return None

    async def nak(self, delay_s: float) -> None:
        return None

    async def term(self) -> None:
        return None

    async def in_progress(self) -> None:
        return None


NO_SETTLE: Settler = _NoSettle()


@dataclass(frozen=True)
class Delivery:
    """One message as received, whatever carried it.

    `max_attempts` is None where the transport never redelivers (core NATS, a file); otherwise
    `attempt` counts deliveries from 1. A transport that `redelivers_forever` (a JetStream
    consumer without `max_deliver`) leaves the give-up to the agent's budget, `max_attempts`.
    `received_at` is when the transport first had it (the JetStream message time, or our
    receive time): payload timestamps are never trusted for it.
    """

    data: bytes
    subject: str
    received_at: float
    headers: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1
    max_attempts: int | None = None
    settler: Settler = NO_SETTLE
    keepalive_s: float | None = None  # how often a long heal calls `in_progress`
    redelivers_forever: bool = False
    slotted: bool = True  # the source reserved a slot for it (core NATS reserves none)

    @property
    def redeliverable(self) -> bool:
        """Whether a nak brings this message back (another attempt remains)."""
        if self.max_attempts is None:
            return False
        return self.redelivers_forever or self.attempt < self.max_attempts

    @property
    def last_attempt(self) -> bool:
        """Whether this is the transport's last delivery of a message it would redeliver."""
        return self.max_attempts is not None and self.attempt >= self.max_attempts

    @property
    def msg_id(self) -> str | None:
        """The publisher's `Nats-Msg-Id` (any letter case, made safe to log), if it sent one."""
        return msg_id_of(self.headers)


Submit = Callable[[Delivery], None]


class Slots:
    """Free places for heals in flight, shared by the agent and its source.

    A source reserves slots before it takes messages, so no message waits unhandled in our
    process while a replica with free slots could have taken it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self._room = asyncio.Event()  # clear: the agent's queue of heals is full
        self._room.set()

    async def reserve(self, most: int = 1) -> int:
        """Wait for one free slot, then take up to `most` without waiting; return how many."""
        await self._sem.acquire()
        taken = 1
        while taken < most and not self._sem.locked():
            await self._sem.acquire()
            taken += 1
        return taken

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            self._sem.release()

    def hold(self, full: bool) -> None:
        """Said by the agent: whether its queue of heals waiting for a slot is full."""
        if full:
            self._room.clear()
        else:
            self._room.set()

    async def room(self) -> None:
        """Wait while the agent's queue is full (a source that reserves no slot waits here)."""
        await self._room.wait()


class Source(Protocol):
    """A transport that feeds the agent: start taking messages, stop at once."""

    name: str

    async def start(self, slots: Slots, submit: Submit, stopping: asyncio.Event) -> None:
        """Start intake; each message submitted has a slot reserved for it, unless its
        delivery says otherwise (`slotted` False: the agent takes one if it heals)."""
        ...

    async def stop(self) -> None:
        """Stop taking messages; unsettled ones come back (JetStream) or are dropped (core)."""
        ...

    def describe(self) -> dict[str, object]:
        """What to log about this source once it started."""
        ...
