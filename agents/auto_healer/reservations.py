"""Breaker reservations of one replica taken together (`breaker.reserve_many`).

Heals that ask for a breaker place while another ask is in flight wait their turn; whoever gets
the turn next reserves for everybody waiting, with one compare-and-set, and each gets the
verdict it would have had alone in that order. A burst of hundreds costs a few writes to the
controls bucket instead of one per injury in a row.
"""

from __future__ import annotations

import asyncio

from auto_healer import breaker
from auto_healer.controls import Cells

_Key = tuple[str, breaker.Limits]


class Reservations:
    """The waiting breaker reservations of one replica, by repository and limits."""

    def __init__(self, turn: asyncio.Lock) -> None:
        self._turn = turn  # one compare-and-set on the breaker at a time (releases take it too)
        self._waiting: dict[_Key, list[asyncio.Future[breaker.Verdict]]] = {}

    async def reserve(self, cells: Cells, repo: str, limits: breaker.Limits) -> breaker.Verdict:
        """This heal's verdict, reserved together with every other one waiting for the turn."""
        key = (repo, limits)
        mine: asyncio.Future[breaker.Verdict] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(mine)
        try:
            async with self._turn:
                if not mine.done():
                    await self._take(cells, key)
        except asyncio.CancelledError:
            mine.cancel()  # still waiting: the next batch passes it by
            raise
        return mine.result()

    async def _take(self, cells: Cells, key: _Key) -> None:
        batch = [f for f in self._waiting.pop(key, []) if not f.done()]
        try:
            verdicts = await breaker.reserve_many(cells, key[0], key[1], len(batch))
        except asyncio.CancelledError:
            # Cut off: the others ask again, each in its own turn (at worst the window
            # counts some places too many, as a single cut-off reservation would).
            self._waiting.setdefault(key, [])[:0] = [f for f in batch if not f.done()]
            raise
        except Exception as exc:
            for f in batch:
                if not f.done():
                    f.set_exception(exc)
            return
        for f, verdict in zip(batch, verdicts, strict=True):
            if not f.done():
                f.set_result(verdict)
