"""The agent on a real 3-node JetStream cluster: replicated assets, node loss, outages.

The slow ones are marked `cluster` (`make test-cluster`); the smoke test runs in `make test`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from auto_healer.assets import cluster_size
from auto_healer.cli import main
from auto_healer.coordination import open_buckets
from auto_healer.embedded import NatsCluster
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError

from tests.agent_support import AgentProcess, seed_dirs, wait_until
from tests.cluster_support import (
    connect,
    leader,
    nats_cluster,  # noqa: F401 (a fixture)
    wait_all_current,
)
from tests.conftest import git, injury

pytestmark = pytest.mark.timeout(600)
ASSETS = [
    "AURA_INJURIES",
    "KV_auto-healer-locks",
    "KV_auto-healer-healed",
    "KV_auto-healer-throttle",
]


@pytest.mark.parametrize(
    ("info", "size"),
    [
        ({}, 1),
        ({"connect_urls": ["a:1", "b:1"]}, 1),  # not clustered: a gateway's URLs don't count
        ({"cluster": "hive", "connect_urls": ["a:1", "b:1", "c:1"]}, 3),
        ({"cluster": "hive", "connect_urls": ["a:1", "a:1"]}, 1),
        ({"cluster": "hive", "connect_urls": []}, 1),
        ({"cluster": "hive"}, 1),
    ],
)
def test_cluster_size_from_server_info(info: dict[str, object], size: int) -> None:
    """The cluster's size is the number of distinct client URLs a clustered server gossips."""
    assert cluster_size(info) == size


def test_setup_nats_creates_every_asset_replicated_and_reports_the_short_one(
    nats_cluster: NatsCluster,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`setup-nats` on 3 nodes: every asset R3, the consumer unlimited; an R1 one is reported."""

    async def precreate_r1() -> None:
        nc = await connect(nats_cluster.url)
        await nc.jetstream().add_stream(
            name="AURA_DEAD_LETTERS", subjects=["aura.hive.dead_letter.>"], num_replicas=1
        )
        await nc.close()

    asyncio.run(precreate_r1())
    assert main(["setup-nats", "--nats-url", nats_cluster.url]) == 0
    out, err = capsys.readouterr()
    replicas = dict(line.split()[1:3] for line in out.splitlines())
    assert replicas == {
        "AURA_INJURIES": "replicas=3",
        "AURA_DEAD_LETTERS": "replicas=1",  # existing: reported, never changed
        "KV_auto-healer-locks": "replicas=3",
        "KV_auto-healer-healed": "replicas=3",
        "KV_auto-healer-throttle": "replicas=3",
        "KV_auto-healer-pages": "replicas=3",
        "KV_auto-healer-controls": "replicas=3",
        "AURA_HEAL_HISTORY": "replicas=3",
    }
    assert "nats stream edit AURA_DEAD_LETTERS --replicas 3" in err

    async def consumer_limit() -> int:
        nc = await connect(nats_cluster.url)
        info = await nc.jetstream().consumer_info("AURA_INJURIES", "auto-healer")
        await nc.close()
        return int(info.config.max_deliver or 0)

    assert asyncio.run(consumer_limit()) == -1


async def _publish(url: str, paths: list[str], timeout_s: float = 30.0) -> None:
    """Publish through JetStream as bee-keeper would, each injury asked again (same body, so
    the same id: deduplicated) while a node just killed leaves its streams without a leader."""
    nc = await connect(url)
    js = nc.jetstream()
    deadline = time.monotonic() + timeout_s
    for path in paths:
        body = json.dumps(injury(path)).encode()
        while True:
            try:
                await js.publish("aura.hive.injury", body, headers={"Nats-Msg-Id": path})
                break
            except (NoStreamResponseError, NatsTimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
    await nc.close()


def _heal_times(remote: Path) -> list[float]:
    """The commit time of every injury healed on the remote, newest first (a batch's commit
    counts once per `Injury-Id:` trailer: a round of 100 may be two or three commits)."""
    out = git(
        remote, "log", "--format=%ct%x00%(trailers:key=Injury-Id,valueonly,separator=%x01)", "main"
    )
    times: list[float] = []
    for line in out.splitlines():
        at, _, ids = line.partition("\0")
        times += [float(at)] * len([i for i in ids.split("\x01") if i.strip()])
    return times


def _heals_reach(remote: Path, count: int) -> Callable[[], bool]:
    return lambda: len(_heal_times(remote)) >= count


def _healed_ids(remote: Path) -> list[str]:
    body = git(remote, "log", "--format=%B", "main")
    return [ln.split(":", 1)[1].strip() for ln in body.splitlines() if ln.startswith("Injury-Id:")]


async def _dead_letters(url: str, timeout_s: float = 30.0) -> int:
    """How many dead letters there are; asked again while a node that just came back makes the
    stream's info time out (a fault of the question, not of the agent)."""
    deadline = time.monotonic() + timeout_s
    while True:
        nc = await connect(url)
        try:
            return int((await nc.jetstream().stream_info("AURA_DEAD_LETTERS")).state.messages)
        except NatsTimeoutError:
            if time.monotonic() > deadline:
                raise
        finally:
            await nc.close()
        await asyncio.sleep(0.5)


@pytest.mark.cluster
async def test_kv_outage_naks_without_using_up_deliveries(
    tmp_path: Path,
    repo: tuple[Path, Path],
    nats_cluster: NatsCluster,  # noqa: F811
) -> None:
    """KV down past MAX_DELIVER=2 deliveries: no page, no dead letter, readyz says why; healed."""
    remote, work = repo
    names = [f"out{i}" for i in range(4)]
    seed_dirs(work, names)
    nc = await connect(nats_cluster.url)
    js = nc.jetstream()
    from auto_healer.assets import ensure_streams

    await ensure_streams(js, max_deliver=2, ack_wait_s=10, replicas=3)
    await open_buckets(js, lock_ttl_s=60, replicas=1)  # as the agent made them before: R1
    victim = await leader(js, "KV_auto-healer-healed")
    others = ",".join(n.url for name, n in nats_cluster.nodes.items() if name != victim)
    await nc.close()
    agent = AgentProcess(
        tmp_path, "a", others, remote, jetstream=True, env={"MAX_DELIVER": "2", "ACK_WAIT_S": "10"}
    )
    try:
        agent.wait_ready(60)
        assert "nats stream edit KV_auto-healer-healed --replicas 3" in agent.logs()
        nats_cluster.nodes[victim].kill()
        await _publish(others, [f"core/src/{n}/" for n in names])
        await wait_until(
            lambda: agent.get("/readyz")[0] == 503, 30, "readiness to report the store"
        )
        assert "coordination store unavailable" in agent.get("/readyz")[1]
        assert agent.metric("auto_healer_coordination_store_up") == 0

        # Each delivery waits out a 5 s KV timeout, then a 3 s nak: past 2 deliveries each.
        def failed() -> float:
            return agent.metric("auto_healer_injuries_total", outcome="failed")

        await wait_until(lambda: failed() > 2 * len(names) + 2, 90, "outages past MAX_DELIVER")
        nc = await connect(others)
        delivered = (await nc.jetstream().consumer_info("AURA_INJURIES", "auto-healer")).delivered
        await nc.close()
        assert delivered.stream_seq == len(names)
        assert await _dead_letters(others) == 0
        nats_cluster.nodes[victim].start()
        await wait_until(
            lambda: len(_heal_times(remote)) == len(names), 90, "all healed", seen=agent.logs
        )
        await wait_until(lambda: agent.get("/readyz")[0] == 200, 30, "readiness back")
        assert sorted(_healed_ids(remote)) == sorted(set(_healed_ids(remote)))
        assert await _dead_letters(others) == 0
        assert agent.metric("auto_healer_coordination_store_up") == 1
        assert agent.terminate() == 0
    finally:
        agent.kill()


@pytest.mark.cluster
async def test_losing_the_node_of_each_asset_mid_burst_heals_all_once(
    tmp_path: Path,
    repo: tuple[Path, Path],
    nats_cluster: NatsCluster,  # noqa: F811
) -> None:
    """Kill -9 the leader of each asset in turn during a burst of 100: each healed once, the
    stall bounded; the agents created every asset with 3 replicas by themselves."""
    remote, work = repo
    rounds = {asset: [f"r{r}x{i}" for i in range(100)] for r, asset in enumerate(ASSETS)}
    seed_dirs(work, [n for names in rounds.values() for n in names])
    env = {"ACK_WAIT_S": "15", "BREAKER_MAX_HEALS": "1000"}  # bursts past the default breaker
    agents = [
        AgentProcess(tmp_path, f"a{i}", nats_cluster.url, remote, jetstream=True, env=env)
        for i in range(2)
    ]
    measured: dict[str, float] = {}
    try:
        for a in agents:
            a.wait_ready(60)
        nc = await connect(nats_cluster.url)
        js = nc.jetstream()
        for asset in ASSETS:
            assert (await js.stream_info(asset)).config.num_replicas == 3
        done = 0
        for asset, names in rounds.items():
            await wait_all_current(js, ASSETS)
            await _publish(nats_cluster.url, [f"core/src/{n}/" for n in names])
            await wait_until(_heals_reach(remote, done + 10), 60, "heals started")
            victim = await leader(js, asset)
            nats_cluster.nodes[victim].kill()
            done += len(names)
            await wait_until(
                _heals_reach(remote, done),
                180,
                f"the burst healed with {asset}'s node {victim} down",
                seen=lambda: (len(_heal_times(remote)), agents[0].logs()[-3000:]),
            )
            measured[asset] = _stall(_heal_times(remote)[: len(names)])
            nats_cluster.nodes[victim].start()
        await asyncio.sleep(1.0)  # a duplicate heal would be pushed within this
        ids = _healed_ids(remote)
        assert len(ids) == len(set(ids)) == done
        git(work, "pull", "-q")
        gone = [n for names in rounds.values() for n in names]
        assert not [n for n in gone if (work / "core" / "src" / n).exists()]
        await nc.close()
        assert await _dead_letters(nats_cluster.url) == 0
        print(
            "stall_s",
            measured,
            "min",
            min(measured.values()),
            "median",
            statistics.median(measured.values()),
            "max",
            max(measured.values()),
        )
        assert max(measured.values()) <= 30, measured
    finally:
        for a in agents:
            a.kill()


def _stall(times: list[float]) -> float:
    """The longest gap between consecutive heals (git commit times have 1 s resolution)."""
    return max((b - a for a, b in itertools.pairwise(sorted(times))), default=0.0)
