"""Fault cases of the agent on real servers: slow heals, a pager or dead-letter stream that is
down, and SIGTERM while work is queued. Nothing may be lost, doubled or taken after the stop."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
import pytest
from auto_healer.bloodstream import DEAD_LETTER_SUBJECT
from auto_healer.embedded import NatsServer, free_port

from tests.agent_support import AgentProcess, Events, consumer_info, wait_until
from tests.conftest import injury
from tests.pager_receiver import Receiver
from tests.test_agent import _payload, _publish, _slow_playbooks


@pytest.mark.slow
async def test_heal_longer_than_ack_wait_is_not_redelivered(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A heal that outlasts ack_wait keeps its message (in-progress): no redelivery, one event."""
    remote, _work = repo
    agent = AgentProcess(
        tmp_path,
        "a",
        nats_server.url,
        remote,
        jetstream=True,
        playbooks=_slow_playbooks(tmp_path),
        env={"ACK_WAIT_S": "1.5", "FMT_DELAY_S": "5"},
    )
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url,
            _payload("core/src/messy.py", injury_type="unformatted_code"),
            jetstream=True,
        )
        await events.wait_for(1, timeout_s=30)
        # Absence can't be awaited: a redelivery during the heal would be announced (skipped, as
        # a duplicate) within this window, longer than ack_wait.
        await asyncio.sleep(2.0)
        assert [e["event_type"] for e in events.items] == ["injury_healed"]
        c = await consumer_info(nats_server.url)
        assert c.num_redelivered == 0
        assert c.num_ack_pending == 0
    finally:
        await events.close()
        agent.kill()


async def test_heal_is_announced_and_resolve_queued_while_pager_is_down(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """With the pager down a heal is acked and announced; its resolve arrives later."""
    remote, _work = repo
    receiver = Receiver()
    receiver.port = free_port()
    env = {
        "PAGER_WEBHOOK_URL": receiver.url,
        "PAGER_FORMAT": "generic",
        "PAGER_ATTEMPTS": "1",
        "PAGER_BACKOFF_S": "0.05",
        "PAGER_DRAIN_INTERVAL_S": "0.2",
        "PAGER_MAX_BACKOFF_S": "0.5",
    }
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True, env=env)
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        await _publish(nats_server.url, _payload("core/src/random_stuff/"), jetstream=True)
        await events.wait_for(1, timeout_s=20)
        assert [e["event_type"] for e in events.items] == ["injury_healed"]
        receiver.start()
        await wait_until(lambda: receiver.delivered, 20, "the queued resolve", seen=agent.logs)
        assert [p["event_action"] for p in receiver.delivered] == ["resolve"]
        c = await consumer_info(nats_server.url)
        assert (c.num_pending, c.num_ack_pending) == (0, 0)
    finally:
        await events.close()
        receiver.stop()
        agent.kill()


@pytest.mark.slow
async def test_poison_is_not_dropped_when_its_dead_letter_cannot_be_written(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Poison is nak'd, not terminated, until its dead letter can be written."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True)
    try:
        agent.wait_ready()
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.delete_stream("AURA_DEAD_LETTERS")
        await js.publish("aura.hive.injury", b'{"not": "an injury"}')
        await wait_until(
            lambda: (
                agent.metric("aura_nats_events_failed_total", topic=DEAD_LETTER_SUBJECT) >= 1
                and agent.metric("auto_healer_in_flight") == 0
            ),
            20,
            "the dead letter to fail and the poison to be settled",
        )
        c = await js.consumer_info("AURA_INJURIES", "auto-healer")
        assert c.ack_floor.stream_seq == 0  # not terminated
        await js.add_stream(name="AURA_DEAD_LETTERS", subjects=["aura.hive.dead_letter.>"])

        async def lettered() -> int:
            return (await js.stream_info("AURA_DEAD_LETTERS")).state.messages

        await wait_until(lettered, 20, "the dead letter to be written", seen=agent.logs)
        assert await lettered() == 1
        dead = await js.get_last_msg("AURA_DEAD_LETTERS", "aura.hive.dead_letter.injury")
        assert dead.data == b'{"not": "an injury"}'
        await nc.drain()
    finally:
        agent.kill()


@pytest.mark.slow
async def test_sigterm_takes_no_new_injury(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """After SIGTERM the agent finishes what it holds and takes no new injury."""
    remote, _work = repo
    agent = AgentProcess(
        tmp_path,
        "a",
        nats_server.url,
        remote,
        jetstream=True,
        playbooks=_slow_playbooks(tmp_path),
        env={"MAX_IN_FLIGHT": "1", "FMT_DELAY_S": "3", "GRACE_PERIOD_S": "20"},
    )
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        first = _payload("core/src/messy.py", injury_type="unformatted_code")
        second = json.dumps(injury("core/src/app.py", injury_type="unformatted_code")).encode()
        await _publish(nats_server.url, first, second, jetstream=True)
        await wait_until(lambda: agent.metric("auto_healer_in_flight") == 1, 20, "a heal in flight")
        started = time.monotonic()
        assert await asyncio.to_thread(agent.terminate) == 0
        assert time.monotonic() - started < 10
        await events.wait_for(1, timeout_s=5)
        # Absence can't be awaited: an event the agent published before exiting may still be on
        # its way to this subscriber for a moment.
        await asyncio.sleep(0.5)
        assert [e["event_type"] for e in events.items] == ["injury_healed"]
        c = await consumer_info(nats_server.url)
        assert c.ack_floor.stream_seq == 1
        assert c.num_pending + c.num_ack_pending == 1
    finally:
        await events.close()
        agent.kill()
