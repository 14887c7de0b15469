"""Intake: the agent's dry-run throughput and memory, each beside its baseline in the same run.

  core       the agent (core NATS, dry-run), first publish → last outcome event, ÷ a raw nats-py
             queue subscriber that decodes JSON (`bench.baselines core`)       target ≥ 0.25
  jetstream  the agent in JetStream mode ÷ a raw pull consumer: fetch + decode + ack  ≥ 0.3
  eda        the agent (core) ÷ ansible-rulebook, 5 rules, generator source, same N   ≥ 5x
  memory     the agent's RSS idle, and its growth after `rss_n` injuries fed steadily
             (idle ≤ 60 MiB, growth ≤ 10 MiB); alone: `python -m bench.run --only memory`

Every run measures each figure and its baseline back to back; a line reports the median ratio
and its min and max over the runs.
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

from bench import eda
from bench.common import ROOT, Agent, Context, Line, fmt_spread, spread

TARGETS = {"core": 0.25, "jetstream": 0.3, "eda": 5.0, "idle_mib": 60.0, "growth_mib": 10.0}
EVENTS = "aura.hive.events.>"


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

    await nc.subscribe(done_subject, cb=on, pending_msgs_limit=10_000_000)
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


def _agent_rate(ctx: Context, work: Path, payloads: list[bytes], *, jetstream: bool) -> float:
    if jetstream:
        asyncio.run(_reset_stream(ctx.nats_url))
    agent = Agent(ctx.tmp, ctx.nats_url, str(work), dry_run=True, jetstream=jetstream)
    try:
        seconds = asyncio.run(
            _timed(ctx.nats_url, payloads, EVENTS, len(payloads), jetstream=jetstream)
        )
    finally:
        agent.stop()
    return len(payloads) / seconds


def _memory(ctx: Context, work: Path, n: int, rss_n: int) -> tuple[float, float, float]:
    """Idle RSS of a fresh agent, then after `rss_n` injuries fed in batches of 1,000 (what it
    keeps, not the queue of a burst), and its peak."""
    agent = Agent(ctx.tmp, ctx.nats_url, str(work), dry_run=True)
    try:
        time.sleep(1.0)
        idle = rss_mib(agent.proc.pid)
        for start in range(0, rss_n, 1000):
            batch = injuries(min(1000, rss_n - start), n + start)
            asyncio.run(_timed(ctx.nats_url, batch, EVENTS, len(batch), jetstream=False))
        return idle, rss_mib(agent.proc.pid), rss_mib(agent.proc.pid, "VmHWM:")
    finally:
        agent.stop()


def run(ctx: Context) -> list[Line]:
    n = 5_000 if ctx.quick else 20_000
    rss_n = 10_000 if ctx.quick else 100_000
    (ctx.tmp / "intake-repo").mkdir()
    _remote, work = make_repo(ctx.tmp / "intake-repo")
    payloads = injuries(n)
    exe, why_not = eda.peer()
    figures: dict[str, list[float]] = {
        k: []
        for k in ("raw_core", "agent_core", "raw_js", "agent_js", "eda", "idle", "after", "peak")
    }
    for i in range(ctx.runs):
        figures["raw_core"].append(n / _baseline("core", ctx.nats_url, n, payloads))
        figures["agent_core"].append(_agent_rate(ctx, work, payloads, jetstream=False))
        if exe is not None:
            (ctx.tmp / f"eda-{i}").mkdir()
            figures["eda"].append(eda.rate(exe, n, ctx.tmp / f"eda-{i}"))
        asyncio.run(_reset_stream(ctx.nats_url))
        figures["raw_js"].append(n / _baseline("js", ctx.nats_url, n, payloads))
        figures["agent_js"].append(_agent_rate(ctx, work, payloads, jetstream=True))
        idle, after, peak = _memory(ctx, work, n, rss_n)
        figures["idle"].append(idle)
        figures["after"].append(after)
        figures["peak"].append(peak)
        print(f"intake run {i + 1}/{ctx.runs}: " + _rates(figures, -1), flush=True)
    return _lines(figures, n, rss_n, why_not)


def _rates(figures: dict[str, list[float]], at: int) -> str:
    parts = [f"{k} {v[at]:,.0f}" for k, v in figures.items() if v]
    return ", ".join(parts)


def _lines(figures: dict[str, list[float]], n: int, rss_n: int, why_not: str) -> list[Line]:
    def ratios(top: str, bottom: str) -> list[float]:
        return [a / b for a, b in zip(figures[top], figures[bottom], strict=True)]

    def line(key: str, measure: str, values: list[float], target: str, goal: float) -> Line:
        s = spread(values)
        detail = {k: spread(v) for k, v in figures.items() if v}
        figure = f"{s['median']:.3f} (min {s['min']:.3f}, max {s['max']:.3f})"
        return Line(key, measure, figure, target, s["median"] >= goal, detail)

    per_s = {k: spread(v)["median"] for k, v in figures.items() if v}
    core = line(
        "intake_core",
        f"intake: agent core dry-run ÷ raw nats-py subscriber (N = {n:,})",
        ratios("agent_core", "raw_core"),
        "≥ 0.25",
        TARGETS["core"],
    )
    core.note = f"agent {per_s['agent_core']:,.0f}/s, raw {per_s['raw_core']:,.0f} msg/s (medians)"
    js = line(
        "intake_jetstream",
        f"intake: agent JetStream ÷ raw fetch+ack (N = {n:,})",
        ratios("agent_js", "raw_js"),
        "≥ 0.3",
        TARGETS["jetstream"],
    )
    js.note = f"agent {per_s['agent_js']:,.0f}/s, raw {per_s['raw_js']:,.0f} msg/s (medians)"
    lines = [core, js]
    if figures["eda"]:
        peer = line(
            "intake_eda",
            f"intake: agent core dry-run ÷ Event-Driven Ansible, 5 rules (N = {n:,})",
            ratios("agent_core", "eda"),
            "≥ 5x",
            TARGETS["eda"],
        )
        peer.note = f"ansible-rulebook {per_s['eda']:,.0f} events/s (median)"
        lines.append(peer)
    else:
        lines.append(
            Line("intake_eda", "intake: agent ÷ Event-Driven Ansible", "skipped", "≥ 5x", None)
        )
        lines[-1].note = f"peer not available: {why_not}"
    return lines + _memory_lines(figures, rss_n)


def run_memory(ctx: Context) -> list[Line]:
    """The memory figures alone (`bench.run --only memory`), measured as `run` measures them."""
    n, rss_n = (5_000, 10_000) if ctx.quick else (20_000, 100_000)
    (ctx.tmp / "memory-repo").mkdir()
    _remote, work = make_repo(ctx.tmp / "memory-repo")
    figures: dict[str, list[float]] = {"idle": [], "after": [], "peak": []}
    for i in range(ctx.runs):
        for key, value in zip(figures, _memory(ctx, work, n, rss_n), strict=True):
            figures[key].append(value)
        print(f"memory run {i + 1}/{ctx.runs}: " + _rates(figures, -1), flush=True)
    return _memory_lines(figures, rss_n)


def _memory_lines(figures: dict[str, list[float]], rss_n: int) -> list[Line]:
    growth = [a - i for a, i in zip(figures["after"], figures["idle"], strict=True)]
    idle = spread(figures["idle"])
    grown = spread(growth)
    return [
        Line(
            "idle_rss_mib",
            "idle RSS",
            fmt_spread(figures["idle"], "MiB", 1),
            "≤ 60 MiB",
            idle["median"] <= TARGETS["idle_mib"],
            {"idle": idle},
        ),
        Line(
            "rss_growth_mib",
            f"RSS growth after {rss_n:,} injuries",
            fmt_spread(growth, "MiB", 1),
            "≤ 10 MiB",
            grown["median"] <= TARGETS["growth_mib"],
            {"growth": grown, "peak": spread(figures["peak"])},
            f"peak {spread(figures['peak'])['median']:.1f} MiB",
        ),
    ]
