"""Burst: N distinct `delete_directory` injuries on one repository, through the agent.

The agent runs in real mode on a local bare remote; the figure is the wall time from the first
publish until the remote holds none of the N directories, and the commits it took. The baseline,
in the same run on an identical copy of the repository: the git CLI deleting the same N
directories with one `git rm -r`, one `git commit` and one `git push`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import nats
from auto_healer.demo import make_repo

from bench.common import Agent, Context, Line, copy_repo, fmt_spread, git, spread, timed
from bench.common import git_env as env

TARGET_COMMITS = 10
TARGET_RATIO = 3.0
PREFIX = "core/src/burst"


def _dirs(n: int) -> list[str]:
    return [f"{PREFIX}/d{i:05d}" for i in range(n)]


def template(tmp: Path, n: int) -> Path:
    """A repository with N unauthorized directories of one file each (and a README)."""
    root = tmp / f"burst-template-{n}"
    root.mkdir()
    files = {f"{d}/stray.py": f"# stray {i}\n" for i, d in enumerate(_dirs(n))}
    make_repo(root, {"README.md": "hive\n", **files})
    return root


def payloads(n: int, audit: int) -> list[bytes]:
    """The injuries of one audit: ids differ from audit to audit (the KV remembers healed ids)."""
    return [
        json.dumps(
            {
                "timestamp": 1735920000.0 + audit * 86400 + i,
                "injury_type": "unauthorized_directory",
                "affected_path": f"{d}/",
                "severity": "high",
                "recommended_action": "delete_directory",
                "auto_heal": True,
            }
        ).encode()
        for i, d in enumerate(_dirs(n))
    ]


def floor(tmpl: Path, dest: Path, n: int) -> float:
    """The git CLI: one `git rm -r`, one commit, one push of the same N directories."""
    _remote, work = copy_repo(tmpl, dest)
    e = env()
    return (
        timed(["git", "rm", "-r", "-q", "--", *_dirs(n)], cwd=work, env=e)
        + timed(["git", "commit", "-q", "-m", f"remove {n} directories"], cwd=work, env=e)
        + timed(["git", "push", "-q", "origin", "main"], cwd=work, env=e)
    )


def _head(remote: Path) -> str:
    """The remote's main, read from its loose ref file (cheap enough to poll)."""
    ref = remote / "refs" / "heads" / "main"
    return ref.read_text() if ref.exists() else git(remote, "rev-parse", "main")


def _clean(remote: Path) -> bool:
    return not git(remote, "ls-tree", "-r", "--name-only", "main", "--", PREFIX).strip()


async def _burst(url: str, remote: Path, data: list[bytes], timeout_s: float) -> tuple[float, int]:
    """Publish every injury; seconds until the remote is clean, and healed events seen."""
    nc = await nats.connect(url)
    healed = 0

    async def on(_msg: object) -> None:
        nonlocal healed
        healed += 1

    await nc.subscribe("aura.hive.events.injury_healed", cb=on)
    await nc.flush()
    last = _head(remote)
    t0 = time.perf_counter()
    for p in data:
        await nc.publish("aura.hive.injury", p)
    await nc.flush()
    deadline = time.monotonic() + timeout_s
    while True:
        now = _head(remote)
        if now != last:  # a push landed: is the remote clean now?
            at, last = time.perf_counter(), now
            if _clean(remote):
                elapsed = at - t0
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the remote was not clean after {timeout_s:g} s")
        await asyncio.sleep(0.02)
    while healed < len(data) and time.monotonic() < deadline:  # every outcome announced
        await asyncio.sleep(0.05)
    await nc.drain()
    return elapsed, healed


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_run(ctx: Context, tmpl: Path, dest: Path, n: int, audit: int) -> dict[str, float]:
    remote, _work = copy_repo(tmpl, dest)
    base = git(remote, "rev-parse", "main").strip()
    # A burst of N heals on purpose: the blast-radius breaker (100 per 10 min) raised past it.
    agent = Agent(dest, ctx.nats_url, str(remote), dry_run=False, BREAKER_MAX_HEALS=str(10 * n))
    try:
        cpu0 = _cpu_s(agent.proc.pid)
        elapsed, healed = asyncio.run(_burst(ctx.nats_url, remote, payloads(n, audit), 300))
        cpu = _cpu_s(agent.proc.pid) - cpu0  # the agent's own CPU (threads, not git's)
    except RuntimeError:
        lines = agent.log.read_text(errors="replace").splitlines()
        odd = [line for line in lines if '"level":"info"' not in line.replace(" ", "")]
        print("\n".join(["agent log, what was not info:", *odd[-40:]]), file=sys.stderr)
        raise
    finally:
        agent.stop()
    commits = int(git(remote, "rev-list", "--count", f"{base}..main"))
    trailers = git(remote, "log", "--format=%(trailers:key=Injury-Id,valueonly)", f"{base}..main")
    return {
        "seconds": elapsed,
        "commits": commits,
        "trailers": len(set(trailers.split())),
        "healed_events": healed,
        "cpu_ms_per_injury": 1000 * cpu / n,
    }


def run(ctx: Context) -> list[Line]:
    n = 300 if ctx.quick else 1000
    tmpl = template(ctx.tmp, n)
    runs, floors = [], []
    for i in range(ctx.runs):
        floors.append(floor(tmpl, ctx.tmp / f"burst-floor-{i}", n))
        runs.append(agent_run(ctx, tmpl, ctx.tmp / f"burst-agent-{i}", n, i))
        r = runs[-1]
        print(
            f"burst {i + 1}/{ctx.runs}: agent {r['seconds']:.2f} s, {r['commits']:.0f} commits, "
            f"{r['trailers']:.0f} trailers, {r['healed_events']:.0f} healed, "
            f"{r['cpu_ms_per_injury']:.2f} ms CPU an injury; "
            f"git CLI {floors[-1]:.3f} s",
            flush=True,
        )
    seconds = [r["seconds"] for r in runs]
    commits = [r["commits"] for r in runs]
    ratios = [r["seconds"] / f for r, f in zip(runs, floors, strict=True)]
    complete = all(r["trailers"] == n and r["healed_events"] == n for r in runs)
    values = {
        "n": n,
        "agent_seconds": spread(seconds),
        "git_cli_seconds": spread(floors),
        "ratio": spread(ratios),
        "commits": spread(commits),
        "agent_cpu_ms_per_injury": spread([r["cpu_ms_per_injury"] for r in runs]),
        "every_injury_trailer_and_outcome": complete,
    }
    return [
        Line(
            "burst_commits",
            f"burst: commits for {n:,} distinct injuries (agent, real mode)",
            f"{spread(commits)['median']:.0f} (min {min(commits):.0f}, max {max(commits):.0f})",
            f"≤ {TARGET_COMMITS}",
            max(commits) <= TARGET_COMMITS and complete,
            values,
            "" if complete else "not every injury had its trailer and its healed event",
        ),
        Line(
            "burst_ratio",
            "burst: agent until the remote is clean ÷ one `git rm -r` + commit + push",
            f"{spread(ratios)['median']:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})",
            f"≤ {TARGET_RATIO:g}x",
            spread(ratios)["median"] <= TARGET_RATIO,
            values,
            f"agent {fmt_spread(seconds)}; git CLI {fmt_spread(floors)}",
        ),
    ]
