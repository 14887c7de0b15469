"""The embedded NATS server like a real one: monitoring on 8222 (or the next free port), its
URLs in a state file the client commands read, and a fast one-line error with no server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import nats
import pytest
from auto_healer.embedded import (
    LOOPBACK,
    NatsServer,
    first_free_port,
    free_port,
    running_urls,
    urls_file,
)

from tests.conftest import injury, write_injuries
from tests.test_deploy_config import BIN


def wait_for(what: str, check: object, timeout_s: float = 30.0) -> None:
    """Poll `check()` until true; fail loudly on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def client_env(state: Path) -> dict[str, str]:
    """No NATS_URL; the state dir where an embedded agent writes its URLs."""
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    return {**env, "XDG_STATE_HOME": str(state), "LOG_FORMAT": "json"}


def test_embedded_agent_serves_monitoring_and_clients_find_it(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """`run` without NATS_URL: /varz answers; tail and publish find the server; file removed."""
    remote, _ = repo
    state = tmp_path / "state"
    env = client_env(state)
    agent = subprocess.Popen(
        [str(BIN / "auto-healer"), "run", "--repo-url", str(remote), "--dry-run"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        path = urls_file(state / "auto-healer")
        wait_for("the embedded server's urls.json", path.exists)
        urls = json.loads(path.read_text())
        assert urls["pid"] == agent.pid
        assert urls["monitoring"].startswith(f"http://{LOOPBACK}:")
        varz = httpx.get(urls["monitoring"] + "/varz", timeout=5).json()
        assert varz["port"] == int(urls["client"].rsplit(":", 1)[1])
        assert varz["jetstream"]["config"]["store_dir"]

        tail = subprocess.Popen(
            [str(BIN / "auto-healer"), "tail", "aura.hive.injury", "--count", "1", "--raw"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert tail.stderr is not None
        assert tail.stderr.readline().startswith(
            f"# listening on aura.hive.injury at {urls['client']}"
        )
        sent = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
        published = subprocess.run([str(BIN / "auto-healer"), "publish", str(sent)], env=env,
                                   capture_output=True, text=True, timeout=30)  # fmt: skip
        assert published.returncode == 0, published.stderr
        out, _ = tail.communicate(timeout=30)
        assert tail.returncode == 0
        assert json.loads(out)["affected_path"] == "core/src/random_stuff/"
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=60)
    started = next(json.loads(ln) for ln in err.splitlines() if '"embedded_nats_started"' in ln)
    assert (started["url"], started["monitoring_url"]) == (urls["client"], urls["monitoring"])
    assert not path.exists(), "the URLs of a stopped server stay behind"


def test_monitoring_takes_the_next_free_port_when_its_own_is_busy() -> None:
    """A busy preferred port is skipped for the next free one."""
    busy = socket.socket()
    busy.bind((LOOPBACK, 0))
    busy.listen()
    try:
        taken = busy.getsockname()[1]
        chosen = first_free_port(taken)
        assert chosen != taken
        with socket.socket() as s:
            s.bind((LOOPBACK, chosen))
    finally:
        busy.close()


def test_a_dead_agents_urls_are_ignored(tmp_path: Path) -> None:
    """urls.json left by a killed agent (its pid gone) is not used."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "urls.json"
    path.write_text(json.dumps({"client": "nats://127.0.0.1:1", "pid": dead.pid}))
    assert running_urls(path) is None


@pytest.mark.parametrize("command", ["tail", "publish"])
def test_no_server_is_one_line_within_two_seconds(command: str, tmp_path: Path) -> None:
    """With no server to reach: exit 2, one line on stderr, well within 2 s."""
    sent = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    args = ["--count", "1"] if command == "tail" else [str(sent)]
    url = f"nats://{LOOPBACK}:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "auto-healer"), command, *args, "--nats-url", url],
        env=client_env(tmp_path / "state"), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    took = time.monotonic() - started
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"auto-healer: error: cannot connect to NATS at {url}")
    assert took < 2.0, f"took {took:.1f}s"


async def test_tail_prints_headers_and_takes_credentials(tmp_path: Path) -> None:
    """tail with --user/--password reads an auth server and prints headers as `Key: value`."""
    with NatsServer(tmp_path / "nats", extra_args=("--user", "ops", "--pass", "s3cret")) as server:
        tail = subprocess.Popen(
            [str(BIN / "auto-healer"), "tail", "aura.hive.injury", "--count", "1",
             "--nats-url", server.url, "--user", "ops", "--password", "s3cret"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert tail.stderr is not None
        assert tail.stderr.readline().startswith("# listening"), "tail did not connect"
        nc = await nats.connect(server.url, user="ops", password="s3cret")
        await nc.publish(
            "aura.hive.injury", b'{"a": 1}', headers={"Nats-Msg-Id": "abc-1", "X-Trace": "t 2"}
        )
        await nc.drain()
        out, _ = tail.communicate(timeout=30)
        refused = subprocess.run(
            [str(BIN / "auto-healer"), "tail", "--count", "1", "--nats-url", server.url],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert tail.returncode == 0
    head = out.splitlines()
    assert head[0].endswith("] aura.hive.injury")
    assert head[1:3] == ["Nats-Msg-Id: abc-1", "X-Trace: t 2"]
    assert refused.returncode == 2
    assert "authorization violation" in refused.stderr.lower(), refused.stderr
