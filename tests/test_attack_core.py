"""A hostile tester's findings on the batch intake, push races and operator controls: each test
failed on the code before its fix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
from auto_healer.admission import Gate
from auto_healer.agent import Agent
from auto_healer.checkout import Checkout, Identity
from auto_healer.effects import Effects
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.liveness import Liveness
from auto_healer.metrics import Metrics
from auto_healer.playbooks import load_playbooks
from auto_healer.sources.nats_core import CoreSource

from tests.conftest import PLAYBOOKS, injury
from tests.inprocess import RecordingPublisher, UpLink


async def test_a_core_flood_of_heals_is_held_back_not_queued_without_end(
    repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Core NATS, one slot, a flood of claimed injuries: at most MAX_QUEUED_HEALS wait in the
    agent (the rest stay in the subscription's bounded buffer), and each is still healed once
    (the queue had no bound: 100k queued heals of 100 kB each is ~20 GB)."""
    _remote, work = repo
    nc = await nats.connect(nats_server.url)
    checkout = Checkout.open(work, identity=Identity("auto-healer", "auto-healer@aura.hive"))
    healer = Healer(load_playbooks(PLAYBOOKS), checkout, dry_run=False)
    publisher, metrics = RecordingPublisher(), Metrics()
    agent = Agent(
        source=CoreSource(nc, "aura.hive.injury", queue=""),
        healer=healer,
        effects=Effects(publisher, None, metrics, js=None, repo=healer.repo_key),  # type: ignore[arg-type]
        gate=Gate(),
        link=UpLink(),
        liveness=Liveness(max_disconnected_s=60),
        metrics=metrics,
        max_in_flight=1,
        max_queued_heals=4,
        grace_period_s=30,
    )
    runner = asyncio.create_task(agent.run(install_signals=False))
    count, peak = 40, 0
    try:
        async with asyncio.timeout(30):
            while not agent.subscribed:
                await asyncio.sleep(0.01)
            for i in range(count):
                body = json.dumps(injury(f"core/src/flood{i}/", pad="x" * 2000)).encode()
                await nc.publish("aura.hive.injury", body)
            await nc.flush()
            while len(publisher.events()) < count:
                peak = max(peak, len(agent._waiting))
                await asyncio.sleep(0.001)
    finally:
        agent.stopping.set()
        await runner
        await nc.close()
        checkout.close()
    assert peak <= 4, f"{peak} heals queued in the agent"
    ids = [e["metadata"]["injury_id"] for e in publisher.events()]
    assert len(set(ids)) == count == len(ids)
