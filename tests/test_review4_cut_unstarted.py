"""A batch cut off before its task ever ran (SIGTERM's cancel landing in the loop turn that took
it, e.g. as the linger ends): the queue must not be left waiting on it for good."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from auto_healer.batch_ahead import Item
from auto_healer.batch_queue import QUIET_S, BatchQueue, Stage
from auto_healer.contracts import parse_injury
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks

from tests.conftest import PLAYBOOKS, injury


def _item(path: str) -> Item:
    parsed = parse_injury(json.dumps(injury(path)).encode())
    playbook = load_playbooks(PLAYBOOKS).match(parsed.injury)
    assert playbook is not None
    return Item(parsed, playbook, path, asyncio.get_running_loop().create_future())


async def test_a_batch_cut_off_before_it_started_leaves_the_queue_working() -> None:
    """The only heal of a batch is cancelled in the loop turn its batch is taken (the linger's
    quiet time and the cancel fall due together): it is cut off, and the next heal is healed."""
    ran: list[int] = []

    async def run(stage: Stage) -> dict[Item, Outcome]:
        ran.append(len(stage.items))
        return {it: Outcome(Kind.HEALED, "healed") for it in stage.items}

    queue = BatchQueue(run, max_batch=10)
    first = asyncio.ensure_future(queue.heal(_item("core/src/a/")))
    while queue._driver is None or queue._grew is None:  # queued; the driver lingers
        await asyncio.sleep(0)
    asyncio.get_running_loop().call_later(2 * QUIET_S, first.cancel)
    time.sleep(4 * QUIET_S)  # a busy loop: the linger's end and the cancel fall due together
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(first, 5)
    assert first.cancelled()
    second = await asyncio.wait_for(queue.heal(_item("core/src/b/")), 5)
    assert second.kind is Kind.HEALED
    assert ran[-1] == 1
