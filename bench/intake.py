"""Intake: the agent's throughput and memory in dry-run, beside raw nats-py baselines.

  (a) raw nats-py queue subscriber that only decodes JSON        (baseline for b)
  (b) the agent's full pipeline, core mode, dry-run: first publish → last outcome event
  (c) the agent in JetStream mode vs a raw fetch+ack consumer     (ratio c)
  (d) the agent's RSS idle and after N injuries (growth)

One run of each (the lines of issue 12's intake work will refine them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
from auto_healer.demo import make_repo

from bench.common import ROOT, Agent, Context, Line

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


def run(ctx: Context) -> list[Line]:
    n = 5_000 if ctx.quick else 20_000
    rss_n = 20_000 if ctx.quick else 100_000
    (ctx.tmp / "intake-repo").mkdir()
    _remote, work = make_repo(ctx.tmp / "intake-repo")
    url = ctx.nats_url
    payloads = injuries(n)
    a = _baseline("core", url, n, payloads)
    print(f"(a) raw core subscriber:   {n / a:10.0f} msg/s", flush=True)
    agent = Agent(ctx.tmp, url, str(work), dry_run=True)
    b = asyncio.run(_timed(url, payloads, "aura.hive.events.>", n, jetstream=False))
    print(f"(b) agent, core, dry-run:  {n / b:10.0f} injuries/s", flush=True)
    agent.stop()

    # (d) on a fresh agent: steady feeding in batches, so the figure is what it keeps,
    # not the queue of a burst (the peak is reported beside it).
    agent = Agent(ctx.tmp, url, str(work), dry_run=True)
    time.sleep(1.0)
    idle = rss_mib(agent.proc.pid)
    for start in range(0, rss_n, 1000):
        batch = injuries(min(1000, rss_n - start), n + start)
        asyncio.run(_timed(url, batch, "aura.hive.events.>", len(batch), jetstream=False))
    after = rss_mib(agent.proc.pid)
    peak = rss_mib(agent.proc.pid, "VmHWM:")
    print(f"(d) agent RSS idle {idle:.1f} MiB, after {rss_n} {after:.1f} MiB", flush=True)
    agent.stop()

    asyncio.run(_reset_stream(url))
    c_raw = _baseline("js", url, n, payloads)
    print(f"(c) raw JetStream fetch+ack:{n / c_raw:9.0f} msg/s", flush=True)
    asyncio.run(_reset_stream(url))
    agent = Agent(ctx.tmp, url, str(work), dry_run=True, jetstream=True)
    c_agent = asyncio.run(_timed(url, payloads, "aura.hive.events.>", n, jetstream=True))
    print(f"(c) agent, JetStream:      {n / c_agent:10.0f} injuries/s", flush=True)
    agent.stop()
    throughput = {
        "n": n,
        "a_raw_core_msgs_per_s": n / a,
        "b_agent_core_dry_run_per_s": n / b,
        "c_raw_js_msgs_per_s": n / c_raw,
        "c_agent_js_dry_run_per_s": n / c_agent,
    }
    memory = {"rss_n": rss_n, "idle_mib": idle, "after_mib": after, "peak_mib": peak}
    return [
        Line(
            "b_over_a",
            f"intake: agent core dry-run ÷ raw decode (N = {n:,})",
            f"{a / b:.3f}",
            "≥ 0.5",
            a / b >= TARGETS["b_over_a"],
            throughput,
        ),
        Line(
            "c_ratio",
            f"intake: agent JetStream ÷ raw fetch+ack (N = {n:,})",
            f"{c_raw / c_agent:.3f}",
            "≥ 0.7",
            c_raw / c_agent >= TARGETS["c_ratio"],
            throughput,
        ),
        Line("idle_rss_mib", "idle RSS", f"{idle:.1f} MiB", "≤ 60 MiB", idle <= 60.0, memory),
        Line(
            "rss_growth_mib",
            f"RSS growth after {rss_n:,} injuries",
            f"{after - idle:.1f} MiB",
            "≤ 10 MiB",
            after - idle <= TARGETS["rss_growth_mib"],
            memory,
            f"peak {peak:.1f} MiB",
        ),
    ]
