"""A real HTTP receiver on 127.0.0.1 for the pager tests: scriptable answers, recorded requests.

Each request takes the next scripted `Answer` (202 once the script is empty). `stop()` closes the
port (connections are refused: the pager is down); `start()` opens it again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    """One scripted answer: status, extra headers, body (or an echo), and a delay before it."""

    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"status": "success", "message": "Event processed"}'
    delay_s: float = 0.0
    echo: bool = False  # answer with the request as received (line, headers, body), like a proxy


@dataclass(frozen=True)
class Recorded:
    """One request as the receiver saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    status: int
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class Receiver:
    """A ThreadingHTTPServer in a thread; `requests` holds every request, `delivered` the 2xx."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Recorded] = []
        self._script: list[Answer] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/enqueue"

    @property
    def delivered(self) -> list[Any]:
        """The JSON bodies of the requests answered with 2xx, in arrival order."""
        return [r.json for r in self.requests if 200 <= r.status < 300]

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def _next(self) -> Answer:
        with self._lock:
            return self._script.pop(0) if self._script else Answer()

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer = receiver._next()
                time.sleep(answer.delay_s)
                with receiver._lock:
                    receiver.requests.append(
                        Recorded(
                            self.command,
                            self.path,
                            dict(self.headers.items()),
                            raw,
                            answer.status,
                            time.monotonic(),
                        )
                    )
                body = answer.body.encode()
                if answer.echo:
                    head = f"{self.requestline}\r\n{self.headers}".encode()
                    body = head + raw
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
