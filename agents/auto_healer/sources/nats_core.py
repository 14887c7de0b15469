"""Core NATS intake: a queue-group subscription, each injury to one replica, at most once.

Core NATS has nothing to settle and never redelivers: a delivery here has no settler and no
further attempts. A dry-run replica listens beside the queue group, so the real replicas still
get every injury.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from auto_healer.sources import Delivery, Slots, Submit


class CoreSource:
    """`aura.hive.injury` through a (queue-group) subscription."""

    name = "nats-core"

    def __init__(
        self,
        nc: Any,
        subject: str,
        *,
        queue: str,
        accept: Callable[[str], bool] | None = None,
    ) -> None:
        self.nc, self.subject, self.queue, self.accept = nc, subject, queue, accept
        self._sub: Any = None

    async def start(self, slots: Slots, submit: Submit, stopping: asyncio.Event) -> None:
        async def on_msg(msg: Any) -> None:
            if self.accept is not None and not self.accept(msg.subject):
                return  # outside a narrower pattern than NATS can subscribe to
            # Held while the agent's queue of heals is full: the subscription's own bounded
            # buffer (then NATS's slow-consumer drop) holds the rest, not our memory.
            await slots.room()
            if stopping.is_set():
                return
            # No slot: what is answered at once never waits behind heals; a heal takes one.
            submit(
                Delivery(
                    data=msg.data,
                    subject=msg.subject,
                    received_at=time.time(),
                    headers=dict(msg.headers or {}),
                    slotted=False,
                )
            )

        self._sub = await self.nc.subscribe(
            self.subject,
            queue=self.queue,
            cb=on_msg,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=1024 * 1024 * 1024,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def describe(self) -> dict[str, object]:
        return {"subject": self.subject, "queue_group": self.queue or None}
