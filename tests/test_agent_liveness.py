"""Liveness on real processes: one oversized message cannot disable the agent, and a lost NATS
connection fails /healthz and ends the process non-zero, so the orchestrator restarts it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nats
from auto_healer.embedded import NatsServer
from auto_healer.liveness import Liveness

from tests.agent_support import AgentProcess, Events, consumer_info
from tests.conftest import git
from tests.test_agent import _payload, _publish


async def test_a_body_just_under_max_payload_is_dead_lettered_and_the_agent_heals_on(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A non-JSON body of max_payload - 200 bytes is dead-lettered truncated; healing goes on."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True)
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        nc = await nats.connect(nats_server.url)
        big = b"x" * (nc.max_payload - 200)
        await nc.jetstream().publish("aura.hive.injury", big, headers={"Nats-Msg-Id": "big-1"})
        await nc.drain()
        rejected = await events.wait_for(1, timeout_s=30)
        assert [e["event_type"] for e in rejected] == ["injury_rejected"]
        await _publish(nats_server.url, _payload("core/src/random_stuff/"), jetstream=True)
        await events.wait_for(2, timeout_s=30)
        assert events.items[1]["event_type"] == "injury_healed"
        assert "core/src/random_stuff/a.py" not in git(remote, "ls-tree", "-r", "main")
        assert agent.get("/healthz")[0] == 200
        assert agent.get("/readyz")[0] == 200
        nc = await nats.connect(nats_server.url)
        try:
            letter = await nc.jetstream().get_last_msg(
                "AURA_DEAD_LETTERS", "aura.hive.dead_letter.injury"
            )
        finally:
            await nc.drain()
        assert letter.headers is not None
        assert letter.headers["Auto-Healer-Original-Size"] == str(len(big))
        assert letter.headers["Auto-Healer-Injury-Id"] == "big-1"
        assert len(letter.data or b"") < len(big)
        c = await consumer_info(nats_server.url)
        assert (c.num_ack_pending, c.num_pending, c.num_redelivered) == (0, 0, 0)
    finally:
        await events.close()
        agent.kill()


def test_a_nats_server_gone_for_good_fails_healthz_and_exits_non_zero(
    tmp_path: Path, repo: tuple[Path, Path]
) -> None:
    """With NATS down past NATS_MAX_DISCONNECTED_S, /healthz fails and the agent exits 1."""
    remote, _work = repo
    server = NatsServer(tmp_path / "nats").start()
    agent = AgentProcess(tmp_path, "a", server.url, remote, env={"NATS_MAX_DISCONNECTED_S": "2"})
    try:
        agent.wait_ready()
        assert agent.get("/healthz")[0] == 200
        server.kill()
        started = time.monotonic()
        code = agent.proc.wait(30)
        assert code == 1, agent.logs()
        assert time.monotonic() - started >= 2  # not before the limit
        lines = [json.loads(x) for x in agent.logs().splitlines() if x.startswith("{")]
        unhealthy = [x for x in lines if x.get("event") == "agent_unhealthy"]
        assert unhealthy, agent.logs()
        assert "unreachable" in unhealthy[0]["reason"]
    finally:
        agent.kill()
        server.stop()


def test_liveness_fails_past_the_limit_or_on_close_but_not_on_a_stop() -> None:
    """Down past the limit or closed is fatal (healthz fails); a reconnect or our stop is not."""
    now = [100.0]
    live = Liveness(max_disconnected_s=10, stall_s=30, clock=lambda: now[0])
    assert live.alive() and live.fatal() is None
    live.disconnected()
    now[0] += 9
    assert live.alive()
    now[0] += 2
    assert not live.alive()
    assert "unreachable for 11s" in (live.fatal() or "")
    live.reconnected()
    live.tick()
    assert live.alive()
    now[0] += 31
    assert not live.alive() and live.fatal() is None  # a stalled loop: unhealthy, not fatal
    live.tick()
    live.closed()
    assert live.fatal() == "the NATS connection was closed and will not reconnect"
    live.stopping()
    assert live.fatal() is None and live.alive()
