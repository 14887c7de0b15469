"""NATS back with its JetStream store lost: the agent does not sit deaf and "ready" forever.

Its stream and durable consumer are gone, so every fetch times out as if there were nothing to
do and bee-keeper's plain publishes are kept by no stream. The agent says so (`intake_lost`),
fails /healthz and exits 1, so the orchestrator restarts it and the restart recreates them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess


def test_a_lost_consumer_is_said_and_fails_liveness_so_the_agent_is_restarted(
    tmp_path: Path, repo: tuple[Path, Path]
) -> None:
    """Store wiped: intake_lost, /healthz 503, exit 1 (~8 s: two consumer checks 3 s apart)."""
    remote, _work = repo
    server = NatsServer(tmp_path / "nats").start()
    agent = AgentProcess(tmp_path, "a", server.url, remote, jetstream=True)
    try:
        agent.wait_ready()
        server.kill()
        shutil.rmtree(server.store_dir)
        server.start()
        deadline = time.monotonic() + 30
        while agent.get("/healthz")[0] == 200:
            assert time.monotonic() < deadline, f"/healthz still ok:\n{agent.logs()}"
            time.sleep(0.2)
        assert agent.proc.wait(40) == 1, agent.logs()
        lines = [json.loads(x) for x in agent.logs().splitlines() if x.startswith("{")]
        lost = [x for x in lines if x.get("event") == "intake_lost"]
        assert lost and "AURA_INJURIES" in lost[0]["reason"], agent.logs()
        assert any(x.get("event") == "agent_unhealthy" for x in lines), agent.logs()
    finally:
        agent.kill()
        server.stop()
