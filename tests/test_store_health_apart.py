"""Each KV bucket's outage is judged by its own calls: the controls bucket answering (it is read
for every injury) never clears the healed-ids bucket's outage from /readyz and the gauge.

Found by the cluster suite on a fresh clone: with one health shared by both, every controls
read that succeeded said "the store is up" between two healed-id reads that failed, and
/readyz stayed 200 through a KV outage."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
from auto_healer.assets import BUCKET_HEALED
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess
from tests.conftest import injury


def test_an_outage_of_one_bucket_stays_said_while_another_answers(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Healed-ids bucket gone under a core agent, injuries keep coming: /readyz stays 503."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote)
    try:
        agent.wait_ready()

        async def lose_bucket_then_publish(n: int) -> None:
            nc = await nats.connect(nats_server.url)
            await nc.jetstream().delete_key_value(BUCKET_HEALED)
            for i in range(n):
                payload = injury(f"core/src/gone{i}/")
                await nc.publish("aura.hive.injury", json.dumps(payload).encode())
                await asyncio.sleep(0.1)
            await nc.drain()

        asyncio.run(lose_bucket_then_publish(30))
        deadline = time.monotonic() + 20
        while agent.get("/readyz")[0] == 200:
            assert time.monotonic() < deadline, f"/readyz still ok:\n{agent.logs()}"
            time.sleep(0.1)
        answers = []
        for _ in range(20):  # the controls bucket answers meanwhile: the outage stays said
            answers.append(agent.get("/readyz")[0])
            time.sleep(0.05)
        assert set(answers) == {503}, answers
        assert "healed ids" in agent.get("/readyz")[1]
    finally:
        agent.kill()
