"""The operator console: the Hive's healing at a glance, approvals, dead letters and the pause
switch, served by the agent on its metrics port under `/ui` (pages) and `/api` (JSON).

Off unless `--console` (`CONSOLE=true`); read-only unless `CONSOLE_TOKEN` (see `security`).
It reads and writes through the agent's own connection and controls mirror (see `backend`),
and its writes are the CLI's (`control_ops`), recorded in the history with the token's name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

from auto_healer.console import api
from auto_healer.console.backend import Backend, Beats
from auto_healer.console.pages import Pages
from auto_healer.console.security import Guardian, load_hosts, load_token
from auto_healer.console.web import Request, as_json
from auto_healer.contracts import SUBJECT_HEARTBEAT
from auto_healer.guard import Guard
from auto_healer.metrics import StartResponse, WsgiApp
from auto_healer.settings import ConsoleSettings

log = structlog.get_logger("auto_healer.console")
__all__ = ["Console", "open_console"]


class Console:
    """The console's WSGI app, for the `/ui` and `/api` mounts of the metrics server."""

    def __init__(self, backend: Backend, guardian: Guardian, repo: str) -> None:
        self.backend, self.guardian = backend, guardian
        self.pages = Pages(backend, guardian, repo)

    @property
    def mounts(self) -> dict[str, WsgiApp]:
        return {"/ui": self, "/api": self}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            req = Request.from_environ(environ)
            host = req.headers.get("host")  # none: no browser, so no rebinding to fear
            if host is not None and not self.guardian.known_host(host):
                why = "unknown Host: add it to CONSOLE_HOSTS (the console answers addresses)"
                return as_json({"error": why}, 421).wsgi(start_response)
            if req.path == "/api" or req.path.startswith("/api/"):
                response = api.handle(self.backend, self.guardian, req)
            else:
                response = self.pages.handle(req)
        except Exception as exc:  # the server thread must answer, and must not leak details
            log.warning("console_error", error=type(exc).__name__)
            response = as_json({"error": "internal error"}, 500)
        return response.wsgi(start_response)


async def open_console(
    settings: ConsoleSettings,
    nc: Any,
    guard: Guard,
    *,
    repo: str,
    signing_key: bytes | None = None,
) -> tuple[Console, Any]:
    """The console on this agent's connection and controls: (the app, the heartbeat
    subscription to unsubscribe at the end). `ConfigError` for an unreadable token."""
    guardian = Guardian(load_token(settings), load_hosts(settings))
    beats = Beats()
    sub = await nc.subscribe(SUBJECT_HEARTBEAT, cb=beats.on_message)
    cells = guard.controls.cells
    if cells is None:
        raise RuntimeError("the console needs the controls bucket")
    backend = Backend(
        asyncio.get_running_loop(),
        nc,
        cells,
        guard.controls,
        repo=repo,
        limits=guard.limits,
        beats=beats,
        signing_key=signing_key,
    )
    log.info(
        "console_enabled",
        writable=guardian.writable,
        token_name=guardian.token.name if guardian.token else None,
    )
    return Console(backend, guardian, repo), sub
