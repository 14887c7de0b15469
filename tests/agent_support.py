"""Helpers for agent tests: real `auto-healer run` processes and a real event subscriber."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nats
from auto_healer.embedded import free_port
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PLAYBOOKS, git


class AgentProcess:
    """One `auto-healer run` replica in its own process, with its own clone of the remote."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        nats_url: str,
        remote: Path,
        *,
        jetstream: bool = False,
        playbooks: Path = PLAYBOOKS,
        dry_run: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.dir / "agent.log"
        argv = [
            sys.executable,
            "-m",
            "auto_healer",
            "run",
            "--nats-url",
            nats_url,
            "--repo-url",
            str(remote),
            "--playbooks",
            str(playbooks),
            "--metrics-port",
            str(self.port),
        ]
        if jetstream:
            argv.append("--jetstream")
        if dry_run:
            argv.append("--dry-run")
        full_env = {
            **os.environ,
            "WORK_DIR": str(self.dir / "work"),
            "LOG_FORMAT": "json",
            "XDG_STATE_HOME": str(self.dir / "state"),
            "GRACE_PERIOD_S": "20",
            **(env or {}),
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_ready(self, timeout_s: float = 20.0) -> AgentProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready:\n{self.logs()}")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of one metric's samples (with these labels) on /metrics; 0 if it has none."""
        status, text = self.get("/metrics")
        assert status == 200, f"{self.name} /metrics answered {status}"
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def checkout(self) -> Path:
        return next(p for p in (self.dir / "work").iterdir() if p.is_dir())

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Events:
    """Collects outcome events from `aura.hive.events.>` on a real connection."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.nc: Any = None
        self.subject = ""

    async def start(self, url: str, subject: str = "aura.hive.events.>") -> Events:
        self.subject = subject
        self.nc = await nats.connect(url)

        async def on(msg: Any) -> None:
            self.items.append({"subject": msg.subject, **json.loads(msg.data)})

        await self.nc.subscribe(subject, cb=on)
        await self.nc.flush()
        await self.nc.flush()  # nats-py may send the first PING ahead of the SUB
        return self

    async def wait_for(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least `count` messages arrived; on timeout raise saying what did."""
        await wait_until(
            lambda: len(self.items) >= count,
            timeout_s,
            f"{count} messages on {self.subject}",
            seen=self.seen,
        )
        return self.items

    def seen(self) -> str:
        """What arrived so far, by event type (or subject), for failure messages."""
        kinds = Counter(e.get("event_type", e["subject"]) for e in self.items)
        return f"{len(self.items)} arrived: {dict(kinds)}"

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["event_type"] == event_type]

    async def close(self) -> None:
        """Drain the subscriber's connection; one still reconnecting after a server restart
        refuses a drain, so it is closed outright."""
        if self.nc is None or self.nc.is_closed:
            return
        if self.nc.is_reconnecting or self.nc.is_connecting:
            await self.nc.close()
        else:
            await self.nc.drain()


async def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float,
    what: str,
    *,
    seen: Callable[[], object] | None = None,
    interval_s: float = 0.05,
) -> None:
    """Poll `predicate` (plain or async) until it is true; on timeout raise naming `what`.

    `seen` describes the state at the timeout, so a failure says what was observed instead.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            state = f"; saw {seen()}" if seen is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{state}")
        await asyncio.sleep(interval_s)


def seed_dirs(work: Path, names: Iterable[str]) -> None:
    """Add one unauthorized directory per name to the checkout and push it."""
    for name in names:
        d = work / "core" / "src" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "stray.py").write_text(f"# {name}\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=bee", "-c", "user.email=b@h", "commit", "-qm", "strays")
    git(work, "push", "-q", "origin", "main")


def remote_tree(remote: Path) -> list[str]:
    return git(remote, "ls-tree", "-r", "--name-only", "main").split()


async def consumer_info(url: str) -> Any:
    """The state of the agents' durable consumer `auto-healer`, read on a fresh connection."""
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().consumer_info("AURA_INJURIES", "auto-healer")
    finally:
        await nc.drain()
