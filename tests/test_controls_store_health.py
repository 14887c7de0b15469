"""A KV bucket not answering is said by /readyz and the store gauge, each judged by its own calls.

Before, the controls bucket's calls kept their own health nobody read: with the bucket gone,
every injury was paged "coordination store unavailable (write a control)" while /readyz said
ok and `auto_healer_coordination_store_up` stayed 1. Then, with one health shared by all the
buckets (caught by the cluster suite on a fresh clone), every controls read that succeeded
cleared the healed-ids bucket's outage, and /readyz stayed 200 through a KV outage.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
from auto_healer.assets import BUCKET_HEALED
from auto_healer.controls import BUCKET_CONTROLS
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess
from tests.conftest import injury


async def _lose_bucket_then_publish(url: str, bucket: str, paths: list[str], gap_s: float) -> None:
    """Delete KV `bucket` under the agent, then publish an injury for each path."""
    nc = await nats.connect(url)
    await nc.jetstream().delete_key_value(bucket)
    for path in paths:
        await nc.publish("aura.hive.injury", json.dumps(injury(path)).encode())
        await asyncio.sleep(gap_s)
    await nc.drain()


def _not_ready(agent: AgentProcess) -> tuple[int, str]:
    """The first /readyz answer that is not 200, within 20 s."""
    deadline = time.monotonic() + 20
    while (answer := agent.get("/readyz"))[0] == 200:
        assert time.monotonic() < deadline, f"/readyz still ok:\n{agent.logs()}"
        time.sleep(0.1)
    return answer


def test_a_controls_bucket_that_does_not_answer_fails_readyz_and_the_gauge_and_is_logged(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Bucket deleted under a core agent, one injury: /readyz 503, gauge 0, its outcome logged."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote)
    try:
        agent.wait_ready()
        lost = _lose_bucket_then_publish(
            nats_server.url, BUCKET_CONTROLS, ["core/src/random_stuff/"], 0
        )
        asyncio.run(lost)
        answer = _not_ready(agent)
        assert "control" in answer[1], answer
        assert "auto_healer_coordination_store_up 0.0" in agent.get("/metrics")[1]
        lines = [json.loads(x) for x in agent.logs().splitlines() if x.startswith("{")]
        said = [x for x in lines if x.get("event") == "injury_outcome"]
        assert said and said[0]["outcome"] == "failed" and "control" in said[0]["reason"], said
    finally:
        agent.kill()


def test_an_outage_of_one_bucket_stays_said_while_another_answers(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Healed-ids bucket gone under a core agent, injuries keep coming (the controls bucket
    answers for each): /readyz stays 503."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote)
    try:
        agent.wait_ready()
        paths = [f"core/src/gone{i}/" for i in range(30)]
        asyncio.run(_lose_bucket_then_publish(nats_server.url, BUCKET_HEALED, paths, 0.1))
        _not_ready(agent)
        answers = []
        for _ in range(20):
            answers.append(agent.get("/readyz")[0])
            time.sleep(0.05)
        assert set(answers) == {503}, answers
        assert "healed ids" in agent.get("/readyz")[1]
    finally:
        agent.kill()
