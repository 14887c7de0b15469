"""The agent pages through a real local HTTP receiver, and loses no page while it is down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from auto_healer.embedded import NatsServer, free_port

from tests.agent_support import AgentProcess, Events, consumer_info, wait_until
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
        await wait_until(lambda: len(receiver.delivered) >= 1, 30, "the trigger", seen=agent.logs)
        await _publish(nats_server.url, injury("core/src/random_stuff/"), jetstream=False)
        await wait_until(lambda: len(receiver.delivered) >= 2, 30, "the resolve", seen=agent.logs)
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


@pytest.mark.slow
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
        # No playbook heals it: a plain escalation, which must come back for its page.
        await _publish(nats_server.url, injury("core/legacy/", "disk_full"), jetstream=True)
        await wait_until(
            lambda: (
                agent.metric("auto_healer_pages_total", delivery="undelivered") >= 1
                and agent.metric("auto_healer_in_flight") == 0
            ),
            20,
            "the page to fail and the injury to be settled",
        )
        # Absence can't be awaited: an outcome announced by mistake would arrive in this window.
        await asyncio.sleep(0.5)
        assert events.items == []  # nak'd: no outcome announced yet
        receiver.start()
        await events.wait_for(1, timeout_s=20)
        # Absence can't be awaited: a second page or event would arrive in this window.
        await asyncio.sleep(1.0)
        assert len(receiver.delivered) == 1
        assert [e["event_type"] for e in events.items] == ["injury_escalated"]
        c = await consumer_info(nats_server.url)
        assert (c.num_pending, c.num_ack_pending) == (0, 0)
        # The one message was delivered again after its nak: one stream message, two deliveries.
        assert (c.delivered.stream_seq, c.ack_floor.stream_seq) == (1, 1)
        assert c.delivered.consumer_seq >= 2
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
        await wait_until(
            lambda: agent.metric("auto_healer_pages_total", delivery="queued") == 1,
            20,
            "the page to be queued in the outbox",
        )
        receiver.start()
        await wait_until(lambda: receiver.delivered, 20, "the page from the outbox")
        # Absence can't be awaited: a duplicate page would arrive in this window.
        await asyncio.sleep(1.0)
        assert len(receiver.delivered) == 1
        assert receiver.delivered[0]["event_action"] == "trigger"
    finally:
        receiver.stop()
        agent.kill()
