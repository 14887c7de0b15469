"""Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints on one port.

Each agent owns its `CollectorRegistry` (no global state), with prometheus-client's process,
platform and GC collectors on it. The HTTP server is prometheus-client's threaded WSGI server
with a small router in front of its metrics app. Nothing here knows NATS: the service hands in
callables that read the connection (`watch_nats`) and the pager's outbox (`watch_pager`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

from auto_healer.embedded import LOOPBACK

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
SUBSCRIBER = "auto-healer"  # the lag gauge's label, as the reference names subscribers


class Metrics:
    """The agent's metrics: the reference's bloodstream metrics (`aura_nats_*`), outcomes, heal
    durations, the NATS connection, the pager's outbox, and the process itself."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the same collectors prometheus-client puts on its global registry, on ours instead
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
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
            "Seconds from the transport's time for an injury (JetStream's stream time, or the "
            "receive time on core NATS) to the start of its handling; 0 once caught up.",
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
        self.pager_pending = Gauge(
            "auto_healer_pager_outbox_pending",
            "Pages waiting in the pager's durable outbox for the receiver to come back.",
            registry=r,
        )
        self.nats_connected = Gauge(
            "auto_healer_nats_connected", "1 while the NATS connection is up, else 0.", registry=r
        )
        self.store_up = Gauge(
            "auto_healer_coordination_store_up",
            "1 while the coordination store (JetStream KV) answers, 0 while it does not.",
            registry=r,
        )
        self.nats_reconnects = Counter(
            "auto_healer_nats_reconnects_total", "Reconnections to NATS.", registry=r
        )
        self.paused = Gauge(
            "auto_healer_paused", "1 while an operator paused every heal (fleet-wide).", registry=r
        )
        self.breaker_open = Gauge(
            "auto_healer_breaker_open",
            "1 while the blast-radius breaker holds this repository's heals.",
            registry=r,
        )
        self.nats_pending_bytes = Gauge(
            "auto_healer_nats_pending_bytes",
            "Bytes buffered by the NATS client, not yet written to the server.",
            registry=r,
        )

    def observe_lag(self, received_at: float, subscriber: str = SUBSCRIBER) -> None:
        """An injury's handling starts: its lag from the transport's time (never the payload's)."""
        self.lag.labels(subscriber=subscriber).set(max(0.0, time.time() - received_at))

    def caught_up(self, subscriber: str = SUBSCRIBER) -> None:
        """Nothing is waiting (an empty fetch, or nothing in flight on core NATS): lag is 0."""
        self.lag.labels(subscriber=subscriber).set(0.0)

    def reconnected(self) -> None:
        """Count one reconnection (the connection's `on_reconnected` callback)."""
        self.nats_reconnects.inc()

    def watch_nats(
        self, *, connected: Callable[[], bool], pending_bytes: Callable[[], int]
    ) -> None:
        """Read the connection's state and its client-side buffer at every scrape."""
        self.nats_connected.set_function(lambda: 1.0 if connected() else 0.0)
        self.nats_pending_bytes.set_function(lambda: float(pending_bytes()))

    def watch_controls(self, paused: Callable[[], bool], breaker_open: Callable[[], bool]) -> None:
        """Read the operator controls at every scrape."""
        self.paused.set_function(lambda: float(paused()))
        self.breaker_open.set_function(lambda: float(breaker_open()))

    def watch_store(self, degraded: Callable[[], str | None]) -> None:
        """Read whether the coordination store answers, at every scrape."""
        self.store_up.set_function(lambda: 0.0 if degraded() else 1.0)

    def watch_pager(self, pending: Callable[[], int]) -> None:
        """Read the pager outbox's backlog at every scrape."""
        self.pager_pending.set_function(lambda: float(pending()))


CLIENT_TIMEOUT_S = 10.0


class HealthServer:
    """Serves `/metrics`, `/healthz` (alive) and `/readyz` (connected and subscribed), and any
    `mounts` (a path prefix such as `/ui` and the WSGI app serving it: the console)."""

    def __init__(
        self,
        metrics: Metrics,
        port: int,
        *,
        ready: Callable[[], bool],
        alive: Callable[[], bool],
        host: str = LOOPBACK,
        why_not_ready: Callable[[], str | None] = lambda: None,
        mounts: Mapping[str, WsgiApp] | None = None,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
    ) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._mounts = dict(mounts or {})
        self._ready, self._alive, self._why = ready, alive, why_not_ready
        # a client that stops sending mid-request gives its thread back after this long, so a
        # few stalled connections cannot starve the probes
        handler = type("_Handler", (_QuietHandler,), {"timeout": client_timeout_s})
        self._server = make_server(
            host, port, self._app, ThreadingWSGIServer, handler_class=handler
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
            why = None if ok or path == "/healthz" else self._why()
            return [b"ok\n" if ok else f"{why or 'not ready'}\n".encode()]
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        for prefix, app in self._mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                return app(environ, start_response)
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
