"""Several sources feeding one agent: the injury intake plus extra subjects (the Hive's
alerts). They share the agent's slots; each settles its own messages."""

from __future__ import annotations

import asyncio

from auto_healer.sources import Slots, Source, Submit


class Combined:
    """Starts and stops every source it holds, in order."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources
        self.name = "+".join(s.name for s in sources)

    async def start(self, slots: Slots, submit: Submit, stopping: asyncio.Event) -> None:
        for source in self.sources:
            await source.start(slots, submit, stopping)

    async def stop(self) -> None:
        for source in self.sources:
            await source.stop()

    def describe(self) -> dict[str, object]:
        return {"sources": [{"name": s.name, **s.describe()} for s in self.sources]}
