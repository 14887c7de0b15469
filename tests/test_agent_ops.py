"""Agent operations on real servers: storm control, dedup, dry-run beside the real replicas,
heartbeat and probes, failed heals, and refusing an incompatible stream."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import nats
from auto_healer.bloodstream import ensure_streams
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess, Events, remote_tree, wait_until
from tests.conftest import git, injury
from tests.test_agent import _payload, _publish


async def test_identical_storm_causes_one_heal(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """10,000 identical injuries in a burst cause exactly one heal; the rest are skipped."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote)
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        storm = [
            json.dumps({**injury("core/src/random_stuff/"), "timestamp": 1.0 + i}).encode()
            for i in range(10_000)
        ]
        await _publish(nats_server.url, *storm)
        await events.wait_for(10_000, timeout_s=90)
        assert len(events.of_type("injury_healed")) == 1
        assert len(events.of_type("injury_skipped")) == 9_999
        log = git(remote, "log", "--format=%s", "main").splitlines()
        assert sum("random_stuff" in s for s in log) == 1
    finally:
        await events.close()
        agent.kill()


async def test_msg_id_dedups_and_dry_run_takes_nothing_from_real_replicas(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Nats-Msg-Id dedups; a dry-run replica plans but leaves the injury to the real ones."""
    remote, _work = repo
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream(), max_deliver=10, ack_wait_s=60)  # as a deployment has
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True, dry_run=True)
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        data = _payload("core/src/random_stuff/")
        await _publish(
            nats_server.url, data, data, data, jetstream=True, msg_ids=["bee-1", "bee-1", "bee-1"]
        )
        await events.wait_for(1)
        # Absence can't be awaited: a message that escaped dedup would be planned in this window.
        await asyncio.sleep(1.0)
        assert [e["event_type"] for e in events.items] == ["injury_heal_planned"]
        assert events.items[0]["metadata"]["injury_id"] == "bee-1"
        assert events.items[0]["metadata"]["dry_run"] is True
        durable = await nc.jetstream().consumer_info("AURA_INJURIES", "auto-healer")
        assert durable.num_pending == 1  # still there for the real replicas
        assert "random_stuff/hack.py" in " ".join(remote_tree(remote))
    finally:
        await events.close()
        await nc.drain()
        agent.kill()


async def test_heartbeat_metrics_and_probes(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """The agent beats on aura.hive.heartbeat and serves /metrics, /healthz and /readyz."""
    remote, _work = repo
    beats = await Events().start(nats_server.url, "aura.hive.heartbeat")
    agent = AgentProcess(
        tmp_path, "a", nats_server.url, remote, env={"HEARTBEAT_INTERVAL_SEC": "0.3"}
    )
    try:
        agent.wait_ready()
        await _publish(nats_server.url, _payload("core/src/x/", auto_heal=False))
        await beats.wait_for(2, timeout_s=10)
        beat = beats.items[-1]
        assert beat["service"] == "auto-healer" and beat["status"] == "active"
        assert {"cpu_percent", "memory_mb", "in_flight"} <= set(beat["metadata"])
        assert agent.get("/healthz")[0] == 200 and agent.get("/readyz")[0] == 200
        await wait_until(
            lambda: agent.metric("auto_healer_injuries_total", outcome="escalated") == 1,
            10,
            "the escalation to be counted",
        )
        status, text = agent.get("/metrics")
        assert status == 200
        for name in (
            "aura_nats_events_published_total",
            "aura_nats_subscriber_lag_seconds",
            "auto_healer_injuries_total",
            "auto_healer_heal_duration_seconds_bucket",
        ):
            assert name in text
        assert 'auto_healer_injuries_total{outcome="escalated"' in text
    finally:
        await beats.close()
        agent.kill()


def test_incompatible_stream_is_a_clear_error(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """An existing in-memory stream on aura.hive.injury is refused, never changed: exit 2."""
    remote, _work = repo

    async def make() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().add_stream(
            name="OTHER", subjects=["aura.hive.injury"], storage="memory"
        )
        await nc.drain()

    asyncio.run(make())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "auto_healer",
            "run",
            "--jetstream",
            "--nats-url",
            nats_server.url,
            "--repo-url",
            str(remote),
            "--playbooks",
            "playbooks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "WORK_DIR": str(tmp_path / "w")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "stream 'OTHER'" in proc.stderr and "in memory" in proc.stderr


async def test_failed_heal_is_announced_and_checkout_left_clean(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A heal that fails (the formatter rejects the file) emits injury_heal_failed; clean tree."""
    remote, work = repo
    (work / "core" / "src" / "broken.py").write_text("def oops(:\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=b", "-c", "user.email=b@h", "commit", "-qm", "broken")
    git(work, "push", "-q", "origin", "main")
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote)
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        await _publish(
            nats_server.url, _payload("core/src/broken.py", injury_type="unformatted_code")
        )
        await events.wait_for(1, timeout_s=20)
        assert [e["event_type"] for e in events.items] == ["injury_heal_failed"]
        assert "formatter exited 2" in events.items[0]["metadata"]["reason"]
        assert git(agent.checkout(), "status", "--porcelain") == ""
    finally:
        await events.close()
        agent.kill()
