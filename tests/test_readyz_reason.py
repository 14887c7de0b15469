"""/readyz says why the agent is not ready when NATS is gone, and recovers with no restart."""

from __future__ import annotations

import time
from pathlib import Path

from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess


def test_readyz_names_a_lost_nats_connection_and_is_ok_again_after_it_returns(
    tmp_path: Path, repo: tuple[Path, Path]
) -> None:
    """NATS killed: 503 naming the disconnection (not a bare "not ready"); restarted: 200."""
    remote, _work = repo
    server = NatsServer(tmp_path / "nats").start()
    agent = AgentProcess(tmp_path, "a", server.url, remote)
    try:
        agent.wait_ready()
        server.kill()
        deadline = time.monotonic() + 10
        while (answer := agent.get("/readyz"))[0] != 503:
            assert time.monotonic() < deadline, f"/readyz still {answer}"
            time.sleep(0.1)
        assert "disconnected from NATS" in answer[1], answer
        server.start()
        agent.wait_ready(timeout_s=15)
    finally:
        agent.kill()
        server.stop()
