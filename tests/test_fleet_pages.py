"""One page per problem across the fleet: the pager's grouping and sent-ledger in NATS KV."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import nats
import pytest
from auto_healer.decision import PageAction
from auto_healer.embedded import NatsServer, free_port
from auto_healer.fleet import SharedPages, open_pages_bucket
from auto_healer.outcomes import Kind
from auto_healer.pager import Pager, PageResult

from tests.agent_support import AgentProcess, wait_until
from tests.conftest import injury
from tests.pager_receiver import Receiver
from tests.test_pager import outcome, settings_for


async def _shared(url: str) -> tuple[object, SharedPages]:
    nc = await nats.connect(url)
    return nc, SharedPages(await open_pages_bucket(nc.jetstream()))


async def _keys(url: str) -> list[str]:
    from nats.js.errors import NoKeysError

    nc = await nats.connect(url)
    try:
        kv = await open_pages_bucket(nc.jetstream())
        try:
            return list(await kv.keys())
        except NoKeysError:
            return []
    finally:
        await nc.close()


async def test_two_pagers_sharing_the_bucket_page_once_per_problem(
    nats_server: NatsServer, receiver: Receiver, tmp_path: Path
) -> None:
    """Two replicas' pagers, 200 escalations of one problem at once: one trigger, one resolve."""
    conns, pagers = [], []
    for i in range(2):
        nc, shared = await _shared(nats_server.url)
        conns.append(nc)
        settings = settings_for(receiver.url, tmp_path / f"r{i}")
        pagers.append(Pager(settings, dry_run=False, shared=shared))
    try:
        outcomes = [outcome(auto_heal=False, timestamp=1735920000.0 + i) for i in range(200)]
        results = await asyncio.gather(
            *(pagers[i % 2].notify(o, PageAction.TRIGGER) for i, o in enumerate(outcomes))
        )
        assert results.count(PageResult.SENT) == 1
        assert results.count(PageResult.GROUPED) == 199
        healed = outcome(kind=Kind.HEALED, timestamp=1735920999.0)
        resolves = await asyncio.gather(*(p.notify(healed, PageAction.RESOLVE) for p in pagers))
        assert resolves.count(PageResult.SENT) == 1
        assert set(resolves) - {PageResult.SENT} <= {PageResult.DUPLICATE, PageResult.GROUPED}
        assert [r.json["event_action"] for r in receiver.requests] == ["trigger", "resolve"]
    finally:
        for nc in conns:
            await nc.close()  # type: ignore[attr-defined]


async def test_a_page_not_delivered_gives_its_claim_back(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A trigger the pager could not take (and that will come back) does not group the next."""
    down = Receiver()
    down.port = free_port()  # nothing listens yet
    nc, shared = await _shared(nats_server.url)
    other_nc, other_shared = await _shared(nats_server.url)
    one_try = settings_for(down.url, tmp_path / "a", pager_attempts=1)
    first = Pager(one_try, dry_run=False, shared=shared)
    second = Pager(settings_for(down.url, tmp_path / "b"), dry_run=False, shared=other_shared)
    try:
        o = outcome(auto_heal=False)
        assert await first.notify(o, PageAction.TRIGGER, durable=False) == PageResult.UNDELIVERED
        down.start()
        again = outcome(auto_heal=False, timestamp=1735920001.0)
        assert await second.notify(again, PageAction.TRIGGER) == PageResult.SENT
    finally:
        down.stop()
        await nc.close()
        await other_nc.close()


@pytest.mark.slow
async def test_shared_store_down_falls_back_to_the_local_pager(
    nats_server: NatsServer, receiver: Receiver, tmp_path: Path
) -> None:
    """With NATS gone the pager still pages (local grouping) after one timeout, not three."""
    nc, shared = await _shared(nats_server.url)
    pager = Pager(settings_for(receiver.url, tmp_path), dry_run=False, shared=shared)
    nats_server.stop()
    try:
        started = time.monotonic()
        assert await pager.notify(outcome(auto_heal=False), PageAction.TRIGGER) == PageResult.SENT
        assert time.monotonic() - started < 9  # one KV timeout (5 s), then the store is skipped
        again = outcome(auto_heal=False, timestamp=1735920001.0)
        assert await pager.notify(again, PageAction.TRIGGER) == PageResult.GROUPED
        assert len(receiver.requests) == 1
    finally:
        with contextlib.suppress(Exception):  # its server is gone
            await nc.close()


async def test_dry_run_never_writes_the_shared_bucket(
    nats_server: NatsServer, receiver: Receiver, tmp_path: Path
) -> None:
    """A dry-run pager given the shared store plans its page and leaves the bucket empty."""
    nc, shared = await _shared(nats_server.url)
    pager = Pager(settings_for(receiver.url, tmp_path), dry_run=True, shared=shared)
    try:
        planned = await pager.notify(outcome(auto_heal=False), PageAction.TRIGGER)
        assert planned == PageResult.PLANNED
        assert await _keys(nats_server.url) == []
        assert receiver.requests == []
    finally:
        await nc.close()


@pytest.mark.timeout(300)
async def test_two_replicas_and_a_thousand_identical_escalations_page_once(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer, receiver: Receiver
) -> None:
    """Two `run` processes share 1,000 escalations of one problem: the pager gets one page."""
    remote, _ = repo
    env = {
        "PAGER_WEBHOOK_URL": receiver.url,
        "PAGER_FORMAT": "generic",
        "PAGER_ATTEMPTS": "1",
        "MAX_IN_FLIGHT": "64",
    }
    agents = [
        AgentProcess(tmp_path, f"a{i}", nats_server.url, remote, jetstream=True, env=env)
        for i in range(2)
    ]
    try:
        for a in agents:
            a.wait_ready(30)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        for i in range(1000):
            doc = injury("core/src/random_stuff/", auto_heal=False, timestamp=1735920000.0 + i)
            await js.publish("aura.hive.injury", json.dumps(doc).encode())
        await nc.close()

        def escalated() -> list[float]:
            return [a.metric("auto_healer_injuries_total", outcome="escalated") for a in agents]

        await wait_until(lambda: sum(escalated()) >= 1000, 180, "1,000 escalations", seen=escalated)
        assert all(n > 0 for n in escalated()), escalated()  # both replicas took a share
        await asyncio.sleep(0.5)  # a second page would arrive within this
        assert len(receiver.requests) == 1, [r.json for r in receiver.requests]
        for a in agents:
            assert a.terminate() == 0
    finally:
        for a in agents:
            a.kill()
