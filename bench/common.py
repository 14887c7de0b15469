"""What every benchmark line shares: the result of a line, run statistics, repositories, git.

A line measures one thing beside its baseline, in the same invocation, and reports the ratio
next to its target. Lines are registered in `bench.run.LINES`; each is a function
`(Context) -> list[Line]`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Context:
    """What a line may use: a scratch dir, the shared nats-server, how many runs, quick mode."""

    tmp: Path
    nats_url: str
    runs: int
    quick: bool


@dataclass
class Line:
    """One measured figure beside its target (`met` is None when there is no target)."""

    key: str
    measure: str
    figure: str
    target: str = ""
    met: bool | None = None
    values: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of a line's runs."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def fmt_spread(values: Sequence[float], unit: str = "s", digits: int = 3) -> str:
    s = spread(values)
    return f"{s['median']:.{digits}f} {unit} (min {s['min']:.{digits}f}, max {s['max']:.{digits}f})"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=git_env()
    ).stdout


def git_env() -> dict[str, str]:
    """git without the user's config: the same for every line and every baseline."""
    return {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@aura.hive",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@aura.hive",
    }


def copy_repo(template: Path, dest: Path) -> tuple[Path, Path]:
    """A fresh copy of a template (`remote.git` + `work`), the clone pointing at its own copy."""
    shutil.copytree(template, dest, symlinks=True)
    remote, work = dest / "remote.git", dest / "work"
    git(work, "remote", "set-url", "origin", str(remote))
    return remote, work


def timed(argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one process, from its start to its exit; it must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed


class Agent:
    """`auto-healer run` in its own process, ready when its /readyz answers."""

    def __init__(
        self, tmp: Path, url: str, repo: str, *, dry_run: bool, jetstream: bool = False, **env: str
    ) -> None:
        from auto_healer.embedded import free_port

        self.port = free_port()
        self.log = tmp / "agent.log"
        repo_flag = "--repo-url" if repo.endswith(".git") else "--repo"
        argv = [
            sys.executable,
            "-m",
            "auto_healer",
            "run",
            "--nats-url",
            url,
            repo_flag,
            repo,
            "--playbooks",
            str(ROOT / "playbooks"),
            "--metrics-port",
            str(self.port),
        ]
        argv += ["--dry-run"] if dry_run else []
        argv += ["--jetstream"] if jetstream else []
        full_env = {
            **git_env(),
            "LOG_LEVEL": "info",  # as deployed: one JSON line per injury
            "XDG_STATE_HOME": str(tmp / "state"),
            "WORK_DIR": str(tmp / "work"),
            "HEARTBEAT_INTERVAL_SEC": "3600",
            **env,
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited: " + self.log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("agent did not become ready: " + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
