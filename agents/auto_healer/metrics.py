"""Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints on one port.

Each agent owns its `CollectorRegistry` (no global state). The HTTP server is prometheus-client's
threaded WSGI server with a small router in front of its metrics app.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from auto_healer.embedded import LOOPBACK

StartResponse = Callable[..., Any]


class Metrics:
    """The agent's metrics: the seed's bloodstream metrics plus outcomes and heal durations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "aura_nats_events_published_total",
            "Events published to the bloodstream.",
            ["topic"],
            registry=r,
        )
        self.failed = Counter(
            "aura_nats_events_failed_total",
            "Events that could not be published.",
            ["topic"],
            registry=r,
        )
        self.lag = Gauge(
            "aura_nats_subscriber_lag_seconds",
            "Seconds between an injury's publication and its handling.",
            ["subscriber"],
            registry=r,
        )
        self.injuries = Counter(
            "auto_healer_injuries_total",
            "Injuries handled, by outcome.",
            ["outcome", "playbook"],
            registry=r,
        )
        self.heal_seconds = Histogram(
            "auto_healer_heal_duration_seconds",
            "Time to handle one injury.",
            ["playbook"],
            registry=r,
            buckets=(0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.in_flight = Gauge("auto_healer_in_flight", "Injuries being handled now.", registry=r)
        self.pages = Counter(
            "auto_healer_pages_total", "Pager notifications, by delivery.", ["delivery"], registry=r
        )


class HealthServer:
    """Serves `/metrics`, `/healthz` (alive) and `/readyz` (connected and subscribed)."""

    def __init__(
        self,
        metrics: Metrics,
        port: int,
        *,
        ready: Callable[[], bool],
        alive: Callable[[], bool],
        host: str = LOOPBACK,
    ) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._ready, self._alive = ready, alive
        self._server = make_server(
            host, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="auto-healer-metrics"
        )

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            ok = self._alive() if path == "/healthz" else self._ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not ready\n"]
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /metrics, /healthz or /readyz\n"]

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes would flood the log
        return
