"""`make bench`: the agent's throughput and memory, side by side with raw baselines, as ratios.

All runs share one nats-server and one N, in one invocation:

  (a) raw nats-py queue subscriber that only decodes JSON        (baseline for b)
  (b) the agent's full pipeline, core mode, dry-run: first publish → last outcome event
  (c) the agent in JetStream mode vs a raw fetch+ack consumer     (ratio c)
  (d) the agent's RSS idle and after 100k injuries (growth)

Writes bench/results/latest.json and latest.md. Speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
from auto_healer.demo import make_repo
from auto_healer.embedded import NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGETS = {"b_over_a": 0.5, "c_ratio": 0.7, "idle_rss_mib": 60.0, "rss_growth_mib": 10.0}


def injuries(n: int, start: int = 0) -> list[bytes]:
    """N distinct injuries, as bee-keeper publishes them (paths the repo does not have)."""
    return [
        json.dumps(
            {
                "timestamp": 1735920000.0 + i,
                "injury_type": "unauthorized_directory",
                "affected_path": f"core/src/stray_{i}/",
                "severity": "high",
                "recommended_action": "delete_directory",
                "auto_heal": True,
            }
        ).encode()
        for i in range(start, start + n)
    ]


def rss_mib(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


class Agent:
    """`auto-healer run --dry-run` in its own process."""

    def __init__(self, tmp: Path, url: str, repo: Path, *, jetstream: bool) -> None:
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "auto_healer",
            "run",
            "--nats-url",
            url,
            "--repo",
            str(repo),
            "--playbooks",
            str(ROOT / "playbooks"),
            "--dry-run",
            "--metrics-port",
            str(self.port),
        ]
        if jetstream:
            argv.append("--jetstream")
        env = {
            **os.environ,
            "LOG_LEVEL": "info",  # as deployed: one JSON line per injury
            "XDG_STATE_HOME": str(tmp / "state"),
            "HEARTBEAT_INTERVAL_SEC": "3600",
            # the burst is no runaway: no blast-radius breaker (a dry-run ignores it anyway)
            "BREAKER_MAX_HEALS": "0",
        }
        with open(tmp / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("agent did not become ready: " + (tmp / "agent.log").read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def _timed(
    url: str, payloads: list[bytes], done_subject: str, expect: int, *, jetstream: bool
) -> float:
    """Publish everything; seconds from the first publish to the `expect`-th done message."""
    nc = await nats.connect(url)
    got = 0
    finished = asyncio.Event()

    async def on(_msg: Any) -> None:
        nonlocal got
        got += 1
        if got >= expect:
            finished.set()

    await nc.subscribe(done_subject, cb=on)
    await nc.flush()
    js = nc.jetstream()
    t0 = time.perf_counter()
    if jetstream:
        for chunk in range(0, len(payloads), 500):
            acks = [js.publish_async("aura.hive.injury", p) for p in payloads[chunk : chunk + 500]]
            await asyncio.gather(*acks)
    else:
        for p in payloads:
            await nc.publish("aura.hive.injury", p)
    await nc.flush()
    await asyncio.wait_for(finished.wait(), 900)
    elapsed = time.perf_counter() - t0
    await nc.drain()
    return elapsed


async def _reset_stream(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):  # absent is fine
        await js.delete_stream("AURA_INJURIES")
    await js.add_stream(name="AURA_INJURIES", subjects=["aura.hive.injury"])
    await nc.drain()


def _baseline(mode: str, url: str, n: int, payloads: list[bytes]) -> float:
    async def ready_then_time() -> float:
        nc = await nats.connect(url)
        ready = await nc.subscribe("bench.ready", max_msgs=1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.baselines", mode, url, str(n)], cwd=ROOT
        )
        await ready.next_msg(timeout=30)
        await nc.drain()
        try:
            return await _timed(url, payloads, "bench.done", 1, jetstream=mode == "js")
        finally:
            proc.wait(60)

    return asyncio.run(ready_then_time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="injuries per throughput run")
    parser.add_argument("--rss-n", type=int, default=100_000, help="injuries for the RSS run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auto-healer-bench-") as tmp_name:
        tmp = Path(tmp_name)
        _remote, work = make_repo(tmp)
        payloads = injuries(args.n)
        with NatsServer(tmp / "nats") as server:
            url = server.url
            a = _baseline("core", url, args.n, payloads)
            print(f"(a) raw core subscriber:   {args.n / a:10.0f} msg/s")

            agent = Agent(tmp, url, work, jetstream=False)
            b = asyncio.run(_timed(url, payloads, "aura.hive.events.>", args.n, jetstream=False))
            print(f"(b) agent, core, dry-run:  {args.n / b:10.0f} injuries/s")
            agent.stop()

            # (d) on a fresh agent: steady feeding in batches, so the figure is what it keeps,
            # not the queue of a burst (the peak is reported beside it).
            agent = Agent(tmp, url, work, jetstream=False)
            time.sleep(1.0)
            idle = rss_mib(agent.proc.pid)
            for start in range(0, args.rss_n, 1000):
                batch = injuries(min(1000, args.rss_n - start), args.n + start)
                asyncio.run(_timed(url, batch, "aura.hive.events.>", len(batch), jetstream=False))
            after = rss_mib(agent.proc.pid)
            peak = rss_mib(agent.proc.pid, "VmHWM:")
            print(
                f"(d) agent RSS idle {idle:.1f} MiB, after {args.rss_n} injuries {after:.1f} MiB"
                f" (peak {peak:.1f} MiB)"
            )
            agent.stop()

            asyncio.run(_reset_stream(url))
            c_raw = _baseline("js", url, args.n, payloads)
            print(f"(c) raw JetStream fetch+ack:{args.n / c_raw:9.0f} msg/s")
            asyncio.run(_reset_stream(url))
            agent = Agent(tmp, url, work, jetstream=True)
            c_agent = asyncio.run(
                _timed(url, payloads, "aura.hive.events.>", args.n, jetstream=True)
            )
            print(f"(c) agent, JetStream:      {args.n / c_agent:10.0f} injuries/s")
            agent.stop()
    report(args, a, b, c_raw, c_agent, idle, after, peak)


def report(
    args: argparse.Namespace,
    a: float,
    b: float,
    c_raw: float,
    c_agent: float,
    idle: float,
    after: float,
    peak: float,
) -> None:
    figures = {
        "n": args.n,
        "rss_n": args.rss_n,
        "a_raw_core_msgs_per_s": args.n / a,
        "b_agent_core_dry_run_per_s": args.n / b,
        "c_raw_js_msgs_per_s": args.n / c_raw,
        "c_agent_js_dry_run_per_s": args.n / c_agent,
        "b_over_a": a / b,
        "c_ratio": c_raw / c_agent,
        "idle_rss_mib": idle,
        "rss_after_mib": after,
        "rss_growth_mib": after - idle,
    }
    met = {
        "b_over_a": figures["b_over_a"] >= TARGETS["b_over_a"],
        "c_ratio": figures["c_ratio"] >= TARGETS["c_ratio"],
        "idle_rss_mib": idle <= TARGETS["idle_rss_mib"],
        "rss_growth_mib": after - idle <= TARGETS["rss_growth_mib"],
    }
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "figures": figures,
        "targets": TARGETS,
        "met": met,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = [
        (
            "(b)/(a) agent core dry-run vs raw decode",
            f"{figures['b_over_a']:.3f}",
            "≥ 0.5",
            met["b_over_a"],
        ),
        (
            "(c) agent JetStream vs raw fetch+ack",
            f"{figures['c_ratio']:.3f}",
            "≥ 0.7",
            met["c_ratio"],
        ),
        ("(d) idle RSS", f"{idle:.1f} MiB", "≤ 60 MiB", met["idle_rss_mib"]),
        (
            f"(d) RSS growth after {args.rss_n:,} injuries",
            f"{after - idle:.1f} MiB",
            "≤ 10 MiB",
            met["rss_growth_mib"],
        ),
    ]
    md = [
        f"Benchmark of {doc['when']} on {doc['machine']}, N = {args.n:,}:",
        "",
        "| measure | figure | target | met |",
        "|---|---|---|---|",
    ]
    md += [f"| {m} | {f} | {t} | {'yes' if ok else 'no'} |" for m, f, t, ok in rows]
    md += [
        "",
        f"Throughput: raw core {figures['a_raw_core_msgs_per_s']:,.0f} msg/s, agent core "
        f"{figures['b_agent_core_dry_run_per_s']:,.0f}/s; raw JetStream "
        f"{figures['c_raw_js_msgs_per_s']:,.0f} msg/s, agent JetStream "
        f"{figures['c_agent_js_dry_run_per_s']:,.0f}/s.",
    ]
    (RESULTS / "latest.md").write_text("\n".join(md) + "\n")
    _quote_in_readme("\n".join(md))
    print("\n".join(md))


def _quote_in_readme(table: str) -> None:
    """Replace the results quoted in docs/benchmarks.md (between its markers) with the latest."""
    readme = ROOT / "docs" / "benchmarks.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    main()
