"""How the fleet scales: `python -m bench.fleet [--injuries 200] [--replicas 1 2 4]`.

A 3-node JetStream cluster on loopback (three nats-server processes); for each replica count,
that many `auto-healer run --jetstream` processes heal the same burst of injuries (one
unauthorized directory each, distinct paths) on one bare git remote. Prints heals per second
(from the first publish to the last heal) and the time to heal (publish to the `injury_healed`
event) at p50 and p95, and exits 1 if any injury was not healed exactly once. Every replica
pushes to the same branch of the same remote, so past a point git (fetch, re-apply, push,
push) is the limit, not NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from auto_healer.contracts import parse_injury_obj
from auto_healer.demo import SEED, make_repo
from auto_healer.embedded import NatsCluster

from tests.agent_support import AgentProcess, seed_dirs
from tests.cluster_support import wait_for_jetstream
from tests.conftest import git


def _injury(path: str) -> dict[str, Any]:
    return {
        "timestamp": 1735920000.0,
        "injury_type": "unauthorized_directory",
        "affected_path": path,
        "severity": "high",
        "recommended_action": "delete_directory",
        "auto_heal": True,
    }


async def _burst(url: str, docs: list[dict[str, Any]], timeout_s: float) -> dict[str, float]:
    """Publish the burst and wait for every heal; returns the time to heal of each injury id."""
    nc = await nats.connect(servers=url.split(","))
    healed: dict[str, float] = {}

    async def on(msg: Any) -> None:
        healed.setdefault(json.loads(msg.data)["metadata"]["injury_id"], time.monotonic())

    await nc.subscribe("aura.hive.events.injury_healed", cb=on)
    await nc.flush()
    js = nc.jetstream()
    sent: dict[str, float] = {}
    for doc in docs:
        sent[parse_injury_obj(doc).id] = time.monotonic()
        await js.publish("aura.hive.injury", json.dumps(doc).encode())
    deadline = time.monotonic() + timeout_s
    while len(healed) < len(docs):
        if time.monotonic() > deadline:
            await nc.close()
            raise SystemExit(f"only {len(healed)} of {len(docs)} healed in {timeout_s:g} s")
        await asyncio.sleep(0.1)
    await nc.close()
    first = min(sent.values())
    return {"_span": max(healed.values()) - first, **{i: healed[i] - sent[i] for i in sent}}


def run(cluster: NatsCluster, tmp: Path, replicas: int, count: int) -> dict[str, float]:
    """One burst of `count` injuries healed by `replicas` processes; the figures."""
    base = tmp / f"r{replicas}"
    base.mkdir(parents=True, exist_ok=True)
    remote, work = make_repo(base, SEED)
    names = [f"fleet{replicas}x{i}" for i in range(count)]
    seed_dirs(work, names)
    breaker = {"BREAKER_MAX_HEALS": str(10 * count)}  # a burst on purpose: past the breaker
    agents = [
        AgentProcess(base, f"a{i}", cluster.url, remote, jetstream=True, env=breaker)
        for i in range(replicas)
    ]
    try:
        for a in agents:
            a.wait_ready(60)
        docs = [_injury(f"core/src/{n}/") for n in names]
        times = asyncio.run(_burst(cluster.url, docs, timeout_s=600))
    finally:
        for a in agents:
            a.kill()
    span = times.pop("_span")
    # A batch heals many injuries in one commit: each injury's `Injury-Id:` trailer, once.
    log = git(remote, "log", "--format=%(trailers:key=Injury-Id,valueonly)", "main").split()
    if len(log) != count or len(set(log)) != count:
        raise SystemExit(f"{replicas} replicas: {len(log)} heal trailers for {count} injuries")
    commits = int(git(remote, "rev-list", "--count", "--grep=Injury-Id:", "main"))
    ordered = sorted(times.values())
    return {
        "replicas": replicas,
        "heals_per_s": count / span,
        "p50_s": statistics.median(ordered),
        "p95_s": ordered[max(0, int(len(ordered) * 0.95) - 1)],
        "commits": commits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--injuries", type=int, default=200)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, NatsCluster(Path(tmp) / "nats") as cluster:
        asyncio.run(wait_for_jetstream(cluster.url))
        rows = [run(cluster, Path(tmp), n, args.injuries) for n in args.replicas]
    print(f"{args.injuries} injuries, 3-node JetStream cluster, one bare git remote\n")
    print("| replicas | heals/s | p50 time to heal | p95 time to heal | commits |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['replicas']:.0f} | {r['heals_per_s']:.1f} | {r['p50_s']:.2f} s "
            f"| {r['p95_s']:.2f} s | {r['commits']:.0f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
