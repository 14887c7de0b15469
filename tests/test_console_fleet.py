"""Pause from one replica's console stops every replica: two agents on one nats-server, the
pause posted to A's API, seen by both within 2 s; resumed from B's, lifted on both."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from auto_healer.demo import SEED, make_repo
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess
from tests.console_support import SECRET, TOKEN_NAME, wait

BEARER = {"Authorization": f"Bearer {SECRET}"}


def test_pause_from_one_console_stops_every_replica(tmp_path: Path) -> None:
    """A pause through replica A's console is honoured by A and B within 2 s (metric and API);
    a resume through B's lifts it on both; the history names who did it, via the console."""
    remote, _work = make_repo(tmp_path, SEED)
    env = {"CONSOLE": "true", "CONSOLE_TOKEN": f"{TOKEN_NAME}:{SECRET}"}
    with NatsServer(tmp_path / "nats") as server:
        agents = [
            AgentProcess(tmp_path, name, server.url, remote, jetstream=True, env=env)
            for name in ("a", "b")
        ]
        try:
            for agent in agents:
                agent.wait_ready()
            a, b = agents
            r = httpx.post(f"http://127.0.0.1:{a.port}/api/pause", headers=BEARER, timeout=20)
            assert r.status_code == 200, r.text
            posted = time.monotonic()
            wait(
                lambda: [x.metric("auto_healer_paused") for x in agents],
                "both replicas paused",
                lambda seen: seen == [1, 1],
                timeout_s=10,
            )
            assert time.monotonic() - posted <= 2.0
            r = httpx.post(f"http://127.0.0.1:{b.port}/api/resume", headers=BEARER, timeout=20)
            assert r.status_code == 200, r.text
            wait(
                lambda: [x.metric("auto_healer_paused") for x in agents],
                "both replicas resumed",
                lambda seen: seen == [0, 0],
            )
            history = httpx.get(
                f"http://127.0.0.1:{a.port}/api/history", params={"kind": "control"}, timeout=20
            ).json()
            assert [(e["metadata"]["control"], e["metadata"]["by"]) for e in history] == [
                ("resume", TOKEN_NAME),
                ("pause", TOKEN_NAME),
            ]
        finally:
            for agent in agents:
                agent.kill()
