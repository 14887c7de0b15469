"""A running agent with its console, on a real nats-server and a real bare remote, for the
console's HTTP and browser tests (one per test module: starting one costs about a second)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
from auto_healer.demo import SEED, make_repo
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess, remote_tree, seed_dirs
from tests.conftest import PLAYBOOKS

TOKEN_NAME, SECRET = "alice", "s3cret-console-token-0123456789"
HELD = "critical"  # the severity the approval playbook takes (the other heals at once)


def playbooks(tmp: Path) -> Path:
    """The shipped playbooks, plus one that holds `critical` directories for approval."""
    pb = tmp / "playbooks"
    pb.mkdir()
    for source in PLAYBOOKS.glob("*.yaml"):
        (pb / source.name).write_text(source.read_text())
    shipped = (PLAYBOOKS / "unauthorized_directory.yaml").read_text()
    narrowed = "  recommended_action: delete_directory\n  severity: [high, medium, low]\n"
    (pb / "unauthorized_directory.yaml").write_text(
        shipped.replace("  recommended_action: delete_directory\n", narrowed)
    )
    guarded = shipped.replace("name: unauthorized_directory", "name: guarded_directory")
    guarded = guarded.replace(
        "  recommended_action: delete_directory\n",
        f"  recommended_action: delete_directory\n  severity: [{HELD}]\n",
    )
    (pb / "guarded_directory.yaml").write_text(guarded + "approval: required\n")
    return pb


@dataclass
class ConsoleAgent:
    """The agent under test, its NATS URL and bare remote, and an HTTP client on its port."""

    agent: AgentProcess
    url: str
    remote: Path
    work: Path
    http: httpx.Client
    server: NatsServer | None = None  # to stop or freeze it under the agent

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.agent.port}"

    def api(self, endpoint: str, **params: str) -> Any:
        r = self.http.get(f"/api/{endpoint}", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def publish(self, *payloads: dict[str, Any] | bytes) -> None:
        """Publish injuries (dicts as JSON, bytes as they are) through JetStream."""

        async def send() -> None:
            nc = await nats.connect(self.url)
            for p in payloads:
                data = p if isinstance(p, bytes) else json.dumps(p).encode()
                await nc.jetstream().publish("aura.hive.injury", data)
            await nc.drain()

        # in a thread of its own: Playwright's sync API keeps an event loop on this one
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, send()).result(30)

    def strays(self) -> list[str]:
        return sorted(p.split("/")[2] for p in remote_tree(self.remote) if p.endswith("/stray.py"))


def wait(
    get: Callable[[], Any],
    what: str,
    done: Callable[[Any], bool] = bool,
    timeout_s: float = 20.0,
) -> Any:
    """Poll `get()` until `done` says its value will do, and return it; fail naming `what`
    (and the last value) on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = get()
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}: {found}")
        time.sleep(0.1)


def outcome(agent: ConsoleAgent, kind: str, path: str) -> list[dict[str, Any]]:
    """The history's outcomes of one kind at one path (as the API gives them)."""
    return agent.api("history", kind=kind, path=path)  # type: ignore[no-any-return]


def start(tmp: Path, *, token: bool = True) -> Iterator[ConsoleAgent]:
    """Start nats-server, a bare remote with stray directories, and the agent with --console."""
    remote, work = make_repo(tmp, SEED)
    seed_dirs(work, ["healme", "guarded", "paused", "replayed"])
    env = {
        "CONSOLE": "true",
        "HEARTBEAT_INTERVAL_SEC": "1",
        "HOME": str(tmp / "home"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    if token:
        env["CONSOLE_TOKEN"] = f"{TOKEN_NAME}:{SECRET}"
    else:
        env["CONSOLE_TOKEN"] = ""
    with NatsServer(tmp / "nats") as server:
        agent = AgentProcess(
            tmp, "agent", server.url, remote, jetstream=True, playbooks=playbooks(tmp), env=env
        )
        try:
            agent.wait_ready()
            with httpx.Client(base_url=f"http://127.0.0.1:{agent.port}", timeout=20) as http:
                yield ConsoleAgent(agent, server.url, remote, work, http, server)
            assert agent.terminate() == 0, agent.logs()
        finally:
            agent.kill()
