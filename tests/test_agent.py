"""The cluster agent on real nats-server processes, real git remotes and real agent processes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import nats
import pytest
from auto_healer.embedded import NatsServer

from tests.agent_support import (
    AgentProcess,
    Events,
    consumer_info,
    remote_tree,
    seed_dirs,
    wait_until,
)
from tests.conftest import git, injury, injury_trailers

pytestmark = pytest.mark.timeout(120)


def _payload(path: str, **extra: object) -> bytes:
    return json.dumps(injury(path, **extra)).encode()


async def _publish(
    url: str, *payloads: bytes, jetstream: bool = False, msg_ids: list[str] | None = None
) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream() if jetstream else None
    for i, data in enumerate(payloads):
        headers = {"Nats-Msg-Id": msg_ids[i]} if msg_ids else None
        if js is not None:
            await js.publish("aura.hive.injury", data, headers=headers)
        else:
            await nc.publish("aura.hive.injury", data, headers=headers)
    await nc.flush()
    await nc.drain()


async def test_two_replicas_share_work_each_injury_once(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Two `run` replicas in one queue group heal through the remote, each injury exactly once."""
    remote, work = repo
    names = [f"stray{i}" for i in range(8)]
    seed_dirs(work, names)
    agents = [AgentProcess(tmp_path, f"a{i}", nats_server.url, remote) for i in range(2)]
    events = await Events().start(nats_server.url)
    try:
        for a in agents:
            a.wait_ready()
        await _publish(nats_server.url, *[_payload(f"core/src/{n}/") for n in names])
        await events.wait_for(len(names), timeout_s=60)
        # Absence can't be awaited: a duplicate heal would be announced within this window.
        await asyncio.sleep(0.5)
        healed = events.of_type("injury_healed")
        assert len(events.items) == len(names), events.items
        assert len(healed) == len(names)
        ids = [e["metadata"]["injury_id"] for e in healed]
        assert len(set(ids)) == len(names)
        tree = remote_tree(remote)
        assert not [p for p in tree if any(f"/{n}/" in p for n in names)]
        assert sorted(injury_trailers(remote)) == sorted(ids)  # once each, batched or not
        for a in agents:
            assert a.terminate() == 0, a.logs()
            assert git(a.checkout(), "status", "--porcelain") == ""
    finally:
        await events.close()
        for a in agents:
            a.kill()


async def test_outcome_events_and_dead_letter_for_poison(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Poison is dead-lettered and terminated; outcomes are announced in the seed's shape."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True)
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url,
            b"{not json",
            _payload("core/src/x/", auto_heal=False),
            _payload("../../etc"),
            jetstream=True,
        )
        await events.wait_for(3)
        kinds = sorted(e["event_type"] for e in events.items)
        assert kinds == ["injury_escalated", "injury_rejected", "injury_rejected"]
        for e in events.items:
            assert set(e) >= {"success", "event_type", "timestamp", "metadata"}
            assert e["success"] is False
            assert e["subject"] == f"aura.hive.events.{e['event_type']}"
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        dead = await js.get_last_msg("AURA_DEAD_LETTERS", "aura.hive.dead_letter.injury")
        info = await js.stream_info("AURA_DEAD_LETTERS")
        consumer = await js.consumer_info("AURA_INJURIES", "auto-healer")
        await nc.drain()
        assert info.state.messages == 2  # the poison and the traversal
        assert dead.headers and "Auto-Healer-Reason" in dead.headers
        assert consumer.num_ack_pending == 0 and consumer.num_pending == 0
        assert agent.terminate() == 0
    finally:
        await events.close()
        agent.kill()


def _slow_playbooks(tmp: Path) -> Path:
    """A formatter playbook whose formatter waits FMT_DELAY_S before running real ruff."""
    pb = tmp / "slow-playbooks"
    pb.mkdir()
    script = (
        "import os,subprocess,sys,time;time.sleep(float(os.environ.get('FMT_DELAY_S','0')));"
        "sys.exit(subprocess.call([sys.executable,'-m','ruff','format',sys.argv[1]]))"
    )
    argv = json.dumps([sys.executable, "-c", script, "{path}"])
    (pb / "fmt.yaml").write_text(
        "name: unformatted_code\nmatch:\n  injury_type: unformatted_code\nsteps:\n"
        f"  - action: format_code\n    with:\n      command: {argv}\n"
        "      timeout_s: 120\nretry:\n  attempts: 1\n"
    )
    return pb


async def test_jetstream_redelivers_after_agent_killed_mid_heal(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A replica killed mid-heal loses nothing: JetStream redelivers to the other, healed once."""
    remote, _work = repo
    pb = _slow_playbooks(tmp_path)
    env = {"ACK_WAIT_S": "3", "LOCK_TTL_S": "2"}
    slow = AgentProcess(
        tmp_path,
        "slow",
        nats_server.url,
        remote,
        jetstream=True,
        playbooks=pb,
        env={**env, "FMT_DELAY_S": "60"},
    )
    events = await Events().start(nats_server.url)
    try:
        slow.wait_ready()
        await _publish(
            nats_server.url,
            _payload("core/src/messy.py", injury_type="unformatted_code"),
            jetstream=True,
        )
        await wait_until(
            lambda: slow.metric("auto_healer_in_flight") == 1, 20, "the slow replica to take it"
        )
        slow.kill()  # mid-heal: its formatter waits a minute
        fast = AgentProcess(
            tmp_path, "fast", nats_server.url, remote, jetstream=True, playbooks=pb, env=env
        ).wait_ready()
        await events.wait_for(1, timeout_s=30)
        assert [e["event_type"] for e in events.items] == ["injury_healed"]
        assert events.items[0]["metadata"]["attempts"] == 1
        assert 'x = {"a": 1}' in git(remote, "show", "main:core/src/messy.py")
        assert fast.terminate() == 0
        assert git(fast.checkout(), "status", "--porcelain") == ""
    finally:
        await events.close()
        slow.kill()


@pytest.mark.slow
async def test_no_injury_lost_when_nats_restarts(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """JetStream mode: a nats-server restart mid-stream loses no injury; all are healed."""
    remote, work = repo
    names = [f"s{i}" for i in range(12)]
    seed_dirs(work, names)
    agent = AgentProcess(
        tmp_path, "a", nats_server.url, remote, jetstream=True, env={"ACK_WAIT_S": "3"}
    )  # acks lost in the restart come back soon
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url, *[_payload(f"core/src/{n}/") for n in names[:6]], jetstream=True
        )
        nats_server.stop()
        await wait_until(
            lambda: agent.get("/readyz")[0] == 503, 20, "the agent to notice the outage"
        )
        nats_server.start()
        await _publish(
            nats_server.url, *[_payload(f"core/src/{n}/") for n in names[6:]], jetstream=True
        )

        async def drained() -> bool:
            c = await consumer_info(nats_server.url)
            return (c.num_pending, c.num_ack_pending) == (0, 0)

        await wait_until(drained, 30, "every injury acked", seen=agent.logs)
        git(work, "pull", "-q")
        assert not [n for n in names if (work / "core" / "src" / n).exists()]
        trailers = injury_trailers(remote)
        assert len(trailers) == len(set(trailers)) == len(names)  # once each
        assert agent.terminate() == 0
    finally:
        agent.kill()


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_and_exits_clean(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """SIGTERM stops intake, lets the in-flight heal finish within the grace period, exits 0."""
    remote, _work = repo
    agent = AgentProcess(
        tmp_path,
        "a",
        nats_server.url,
        remote,
        playbooks=_slow_playbooks(tmp_path),
        env={"FMT_DELAY_S": "2"},
    )
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url, _payload("core/src/messy.py", injury_type="unformatted_code")
        )
        await wait_until(lambda: agent.metric("auto_healer_in_flight") == 1, 20, "a heal in flight")
        assert await asyncio.to_thread(agent.terminate) == 0
        await events.wait_for(1, timeout_s=5)
        assert [e["event_type"] for e in events.items] == ["injury_healed"]
        assert git(agent.checkout(), "status", "--porcelain") == ""
    finally:
        await events.close()
        agent.kill()


async def test_heal_cut_off_by_deadline_is_redelivered_and_checkout_clean(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A heal cut off by the grace deadline leaves a clean checkout and comes back (JetStream)."""
    remote, _work = repo
    pb = _slow_playbooks(tmp_path)
    agent = AgentProcess(
        tmp_path,
        "a",
        nats_server.url,
        remote,
        jetstream=True,
        playbooks=pb,
        env={"FMT_DELAY_S": "30", "GRACE_PERIOD_S": "0.5"},
    )
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url,
            _payload("core/src/messy.py", injury_type="unformatted_code"),
            jetstream=True,
        )
        await wait_until(lambda: agent.metric("auto_healer_in_flight") == 1, 20, "a heal in flight")
        assert await asyncio.to_thread(agent.terminate) == 0
        assert git(agent.checkout(), "status", "--porcelain") == ""
        c = await consumer_info(nats_server.url)
        assert c.num_pending + c.num_ack_pending + c.num_redelivered >= 1
        assert c.delivered.stream_seq == 1 and c.ack_floor.stream_seq == 0
    finally:
        agent.kill()
