"""Two agent replicas heal 60 injuries while a teammate's process pushes to the remote every 200 ms:
all healed, none given up, dead-lettered or paged, every teammate commit kept, no force push."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess, consumer_info, wait_until
from tests.busy_support import BusyRemote, assert_nothing_lost
from tests.conftest import git, injury, injury_trailers
from tests.pager_receiver import Receiver
from tests.test_push_race import MESSY, _ruff_formatted, _seed_messy

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
INJURIES = 60


def _pager_env(receiver: Receiver) -> dict[str, str]:
    return {
        "PAGER_WEBHOOK_URL": receiver.url,
        "PAGER_ROUTING_KEY": "R0UTING-KEY-SECRET",
        "PAGER_ATTEMPTS": "1",
        "PAGER_DRAIN_INTERVAL_S": "0.2",
    }


async def test_two_replicas_heal_sixty_injuries_against_a_busy_remote(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer, receiver: Receiver
) -> None:
    """60 format injuries (the shipped ruff playbook) published over 3 s to two JetStream
    replicas, a commit landing on the remote every 200 ms from another process: each healed
    once, none given up, dead-lettered or paged, nothing lost or forced."""
    remote, work = repo
    names = [f"core/src/busy{i}.py" for i in range(INJURIES)]
    _seed_messy(work, names)
    env = _pager_env(receiver)
    agents = [
        AgentProcess(tmp_path, f"a{i}", nats_server.url, remote, jetstream=True, env=env)
        for i in range(2)
    ]
    teammate = BusyRemote(tmp_path, remote)
    nc = await nats.connect(nats_server.url)
    events: dict[str, tuple[float, dict[str, Any]]] = {}

    async def on_event(msg: Any) -> None:
        event = json.loads(msg.data)
        events[event["metadata"]["injury_id"] + event["event_type"]] = (time.monotonic(), event)

    try:
        for a in agents:
            a.wait_ready()
        teammate.wait_busy()
        await nc.subscribe("aura.hive.events.>", cb=on_event)
        await nc.flush()
        js = nc.jetstream()
        published: dict[str, float] = {}
        for i, name in enumerate(names):
            data = json.dumps(injury(name, injury_type="unformatted_code")).encode()
            await js.publish("aura.hive.injury", data, headers={"Nats-Msg-Id": f"busy-{i}"})
            published[f"busy-{i}"] = time.monotonic()
            await asyncio.sleep(0.05)
        await wait_until(
            lambda: len(events) >= INJURIES,
            240,
            f"{INJURIES} final outcomes",
            seen=lambda: sorted({e["event_type"] for _, e in events.values()}),
        )
        kept = teammate.stop()
        info = await consumer_info(nats_server.url)
        dead = await js.stream_info("AURA_DEAD_LETTERS")
    finally:
        teammate.kill()
        await nc.drain()
        for a in agents:
            a.kill()
    kinds = [e["event_type"] for _, e in events.values()]
    assert kinds == ["injury_healed"] * INJURIES, kinds
    took = sorted(t - published[e["metadata"]["injury_id"]] for t, e in events.values())
    print(
        f"time to heal of {INJURIES} injuries against a remote pushed every 200 ms: "
        f"min {took[0]:.2f} s, median {statistics.median(took):.2f} s, max {took[-1]:.2f} s; "
        f"{info.num_redelivered} redelivered, {len(kept)} teammate commits"
    )
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert dead.state.messages == 0
    assert not [r for r in receiver.requests if r.json.get("event_action") == "trigger"]
    for i, name in enumerate(names):
        assert git(remote, "show", f"main:{name}") == _ruff_formatted(MESSY.format(n=i))
    assert len(injury_trailers(remote)) == INJURIES  # each healed once
    assert len(kept) >= 10, "the teammate was not busy"
    assert_nothing_lost(remote, kept)
