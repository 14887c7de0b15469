"""The agent pages through a real local HTTP receiver, and loses no page while it is down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
from auto_healer.embedded import NatsServer, free_port

from tests.agent_support import AgentProcess, Events, consumer_info
from tests.conftest import injury
from tests.pager_receiver import Receiver


def _pager_env(receiver: Receiver) -> dict[str, str]:
    return {
        "PAGER_WEBHOOK_URL": receiver.url,
        "PAGER_FORMAT": "pagerduty",
        "PAGER_ROUTING_KEY": "R0UTING-KEY-SECRET",
        "PAGER_ATTEMPTS": "1",
        "PAGER_BACKOFF_S": "0.05",
        "PAGER_DRAIN_INTERVAL_S": "0.2",
    }


async def _publish(url: str, payload: dict[str, object], *, jetstream: bool) -> None:
    nc = await nats.connect(url)
    data = json.dumps(payload).encode()
    if jetstream:
        await nc.jetstream().publish("aura.hive.injury", data)
    else:
        await nc.publish("aura.hive.injury", data)
    await nc.flush()
    await nc.drain()


async def _wait(predicate: object, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s * 10)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)


async def test_escalation_pages_then_heal_resolves(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """An escalation triggers one incident; the later heal resolves it; the key is never logged."""
    remote, _work = repo
    receiver = Receiver().start()
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, env=_pager_env(receiver))
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url, injury("core/src/random_stuff/", auto_heal=False), jetstream=False
        )
        await _wait(lambda: len(receiver.delivered) >= 1)
        await _publish(nats_server.url, injury("core/src/random_stuff/"), jetstream=False)
        await _wait(lambda: len(receiver.delivered) >= 2)
        trigger, resolve = receiver.delivered
        assert trigger["event_action"] == "trigger"
        assert trigger["routing_key"] == "R0UTING-KEY-SECRET"
        assert trigger["payload"]["severity"] == "error"
        assert "auto_heal is false" in trigger["payload"]["summary"]
        assert resolve["event_action"] == "resolve"
        assert resolve["dedup_key"] == trigger["dedup_key"]
        assert agent.terminate() == 0
        assert "R0UTING-KEY-SECRET" not in agent.logs()
    finally:
        receiver.stop()
        agent.kill()


async def test_jetstream_naks_while_pager_down_and_pages_once_when_back(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """JetStream: pager down means nak, not loss; once it is back the page arrives once."""
    remote, _work = repo
    receiver = Receiver()
    receiver.port = free_port()  # known URL, nothing listening yet: the pager is down
    agent = AgentProcess(
        tmp_path, "a", nats_server.url, remote, jetstream=True, env=_pager_env(receiver)
    )
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        await _publish(nats_server.url, injury("core/src/legacy/", auto_heal=False), jetstream=True)
        await asyncio.sleep(2.0)
        assert events.items == []  # nak'd: no outcome announced yet
        receiver.start()
        await _wait(lambda: len(events.items) >= 1, timeout_s=20)
        await asyncio.sleep(1.0)
        assert len(receiver.delivered) == 1
        assert [e["event_type"] for e in events.items] == ["injury_escalated"]
        c = await consumer_info(nats_server.url)
        assert (c.num_pending, c.num_ack_pending) == (0, 0)
        assert c.num_redelivered >= 0 and c.delivered.consumer_seq >= 2
    finally:
        await events.close()
        receiver.stop()
        agent.kill()


async def test_core_mode_outbox_delivers_after_pager_comes_back(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Core mode: a page held in the outbox arrives exactly once when the pager is back."""
    remote, _work = repo
    receiver = Receiver()
    receiver.port = free_port()
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, env=_pager_env(receiver))
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url, injury("core/src/legacy/", auto_heal=False), jetstream=False
        )
        await asyncio.sleep(1.5)
        receiver.start()
        await _wait(lambda: len(receiver.delivered) >= 1, timeout_s=20)
        await asyncio.sleep(1.0)
        assert len(receiver.delivered) == 1
        assert receiver.delivered[0]["event_action"] == "trigger"
    finally:
        receiver.stop()
        agent.kill()
