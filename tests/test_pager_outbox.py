"""The pager while the receiver is down: the durable outbox, restarts, no loss, no duplicates."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from auto_healer.decision import PageAction
from auto_healer.outcomes import Kind
from auto_healer.pager import Pager, PageResult

from tests.pager_receiver import Answer, Receiver
from tests.test_pager import KEY, outcome, settings_for


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `check()` holds, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_receiver_down_then_up_every_page_arrives_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Receiver down then up: every page arrives once, a trigger before its resolve."""
    p = Pager(settings_for(receiver.url, tmp_path), dry_run=False)
    await p.start()
    try:
        receiver.stop()
        problems = [outcome(path=f"core/src/dir{i}/") for i in range(5)]
        for o in problems:
            assert await p.notify(o, PageAction.TRIGGER) == PageResult.QUEUED
        healed = outcome(Kind.HEALED, "pushed", path="core/src/dir0/", timestamp=2.0)
        assert await p.notify(healed, PageAction.RESOLVE) == PageResult.QUEUED
        assert p.pending == 6
        await asyncio.sleep(2.0)  # "a minute" down, with the drainer retrying meanwhile
        receiver.start()
        await eventually(lambda: p.pending == 0)
    finally:
        await p.aclose()
    triggers = [b for b in receiver.delivered if b["event_action"] == "trigger"]
    ids = Counter(b["payload"]["custom_details"]["injury_id"] for b in triggers)
    assert ids == Counter({o.injury_id: 1 for o in problems})
    actions = [(b["event_action"], b["dedup_key"]) for b in receiver.delivered]
    resolve = ("resolve", triggers[0]["dedup_key"])
    assert actions.count(resolve) == 1
    assert actions.index(resolve) > actions.index(("trigger", triggers[0]["dedup_key"]))
    assert len(receiver.delivered) == 6
    assert (tmp_path / "pager" / "outbox.jsonl").read_text() == ""  # compacted once drained


async def test_outbox_survives_a_restart_and_is_sent_exactly_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The outbox survives a restart and is sent exactly once; later redeliveries are duplicates."""
    settings = settings_for(receiver.url, tmp_path, pager_drain_interval_s=60)
    first = Pager(settings, dry_run=False)
    await first.start()
    receiver.stop()
    problems = [outcome(path=f"core/src/dir{i}/") for i in range(3)]
    for o in problems:
        assert await first.notify(o, PageAction.TRIGGER) == PageResult.QUEUED
    await first.aclose()  # the process ends with the pager still down
    outbox_text = (tmp_path / "pager" / "outbox.jsonl").read_text()
    assert len(outbox_text.splitlines()) == 3
    assert KEY not in outbox_text  # the routing key is never written to disk

    receiver.start()
    second = Pager(settings, dry_run=False)
    assert second.pending == 3
    await second.start()  # the drainer sends what was pending at once
    try:
        await eventually(lambda: second.pending == 0)
        for o in problems:
            assert await second.notify(o, PageAction.TRIGGER) == PageResult.DUPLICATE
    finally:
        await second.aclose()
    third = Pager(settings, dry_run=False)
    assert third.pending == 0
    await third.start()
    await asyncio.sleep(0.1)
    await third.aclose()
    assert len(receiver.delivered) == 3
    ids = Counter(b["payload"]["custom_details"]["injury_id"] for b in receiver.delivered)
    assert ids == Counter({o.injury_id: 1 for o in problems})


async def test_a_torn_last_line_loses_nothing_else(receiver: Receiver, tmp_path: Path) -> None:
    """A crash in the middle of an append leaves a torn line; the other pages are still sent."""
    settings = settings_for(receiver.url, tmp_path, pager_drain_interval_s=60)
    first = Pager(settings, dry_run=False)
    await first.start()
    receiver.stop()
    for i in range(2):
        await first.notify(outcome(path=f"core/src/dir{i}/"), PageAction.TRIGGER)
    await first.aclose()
    with (tmp_path / "pager" / "outbox.jsonl").open("a") as fh:
        fh.write('{"injury_id": "torn", "act')
    receiver.start()
    second = Pager(settings, dry_run=False)
    await second.start()
    try:
        await eventually(lambda: second.pending == 0)
    finally:
        await second.aclose()
    assert len(receiver.delivered) == 2


async def test_a_storm_while_the_pager_is_down_queues_one_page(
    receiver: Receiver, tmp_path: Path
) -> None:
    """1,000 identical injuries while the pager is down put one page in the outbox, sent once."""
    p = Pager(settings_for(receiver.url, tmp_path, pager_attempts=1), dry_run=False)
    await p.start()
    try:
        receiver.stop()
        storm = [outcome(timestamp=1735920000.0 + i / 1000) for i in range(1000)]
        results = await asyncio.gather(*(p.notify(o, PageAction.TRIGGER) for o in storm))
        assert Counter(results) == {PageResult.QUEUED: 1, PageResult.GROUPED: 999}
        receiver.start()
        await eventually(lambda: p.pending == 0)
    finally:
        await p.aclose()
    assert len(receiver.delivered) == 1


async def test_a_long_retry_after_is_honoured_by_the_outbox(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A Retry-After beyond the backoff cap queues the page; the drainer waits that long."""
    p = Pager(settings_for(receiver.url, tmp_path, pager_max_backoff_s=0.1), dry_run=False)
    await p.start()
    try:
        receiver.script(Answer(429, headers={"Retry-After": "1"}))
        assert await p.notify(outcome(), PageAction.TRIGGER) == PageResult.QUEUED
        await eventually(lambda: p.pending == 0)
    finally:
        await p.aclose()
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 202)
    assert second.at - first.at >= 1.0


async def test_a_refused_page_in_the_outbox_is_dead_lettered_not_resent(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A queued page the pager later refuses (4xx) leaves the outbox for the dead letters."""
    p = Pager(settings_for(receiver.url, tmp_path, pager_attempts=1), dry_run=False)
    await p.start()
    try:
        receiver.script(Answer(500), Answer(400, body='{"errors":["payload invalid"]}'))
        assert await p.notify(outcome(), PageAction.TRIGGER) == PageResult.QUEUED
        await eventually(lambda: p.pending == 0)
        await asyncio.sleep(0.2)
    finally:
        await p.aclose()
    assert [r.status for r in receiver.requests] == [500, 400]
    letters = (tmp_path / "pager" / "dead-letter.jsonl").read_text().splitlines()
    assert json.loads(letters[0])["status"] == 400


def test_two_processes_never_drain_one_outbox(tmp_path: Path) -> None:
    """A second process on the same PAGER_OUTBOX_PATH is refused, so no page is sent twice."""
    import subprocess
    import sys

    from auto_healer.pager import Pager
    from auto_healer.settings import load_settings

    outbox = tmp_path / "pager" / "outbox.jsonl"
    settings = load_settings(
        pager_webhook_url="http://127.0.0.1:9/x", pager_format="generic", pager_outbox_path=outbox
    ).pager
    first = Pager(settings, dry_run=False)
    code = (
        "import sys\nfrom auto_healer.pager import Pager\nfrom auto_healer.settings import "
        "load_settings\nfrom auto_healer.errors import ConfigError\n"
        "s = load_settings(pager_webhook_url='http://127.0.0.1:9/x', pager_format='generic', "
        "pager_outbox_path=sys.argv[1]).pager\n"
        "try:\n    Pager(s, dry_run=False)\nexcept ConfigError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(outbox)], capture_output=True, text=True, check=True
    ).stdout
    assert "in use by another auto-healer process" in out
    assert first is not None
