"""The controls bucket not answering is said by /readyz and the store gauge, like the others.

Before, its calls kept their own health nobody read: with the bucket gone, every injury was
paged "coordination store unavailable (write a control)" while /readyz said ok and
`auto_healer_coordination_store_up` stayed 1.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
from auto_healer.controls import BUCKET_CONTROLS
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess
from tests.conftest import injury


def test_a_controls_bucket_that_does_not_answer_fails_readyz_and_the_gauge_and_is_logged(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Bucket deleted under a core agent, one injury: /readyz 503, gauge 0, its outcome logged."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote)
    try:
        agent.wait_ready()

        async def lose_bucket_then_publish() -> None:
            nc = await nats.connect(nats_server.url)
            await nc.jetstream().delete_key_value(BUCKET_CONTROLS)
            await nc.publish(
                "aura.hive.injury", json.dumps(injury("core/src/random_stuff/")).encode()
            )
            await nc.drain()

        asyncio.run(lose_bucket_then_publish())
        deadline = time.monotonic() + 20
        while (answer := agent.get("/readyz"))[0] == 200:
            assert time.monotonic() < deadline, f"/readyz still ok:\n{agent.logs()}"
            time.sleep(0.2)
        assert "control" in answer[1], answer
        assert "auto_healer_coordination_store_up 0.0" in agent.get("/metrics")[1]
        lines = [json.loads(x) for x in agent.logs().splitlines() if x.startswith("{")]
        said = [x for x in lines if x.get("event") == "injury_outcome"]
        assert said and said[0]["outcome"] == "failed" and "control" in said[0]["reason"], said
    finally:
        agent.kill()
