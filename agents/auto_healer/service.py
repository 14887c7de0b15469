"""Assembles and runs the cluster agent from settings: NATS (given or embedded), the source,
checkout, coordinator, pager, healer, effects. `auto-healer run` calls `serve()`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog

from auto_healer.admission import Gate
from auto_healer.agent import Agent
from auto_healer.alerts import check_subjects, subject_matches, subscription
from auto_healer.assets import default_replicas
from auto_healer.bloodstream import Publisher, connect, open_intake
from auto_healer.checkout import open_checkout
from auto_healer.contracts import SUBJECT_INJURY
from auto_healer.coordination import Coordinator, KvCoordinator, LocalCoordinator
from auto_healer.effects import Effects
from auto_healer.embedded import NatsServer, first_free_port, publish_urls, urls_file
from auto_healer.errors import ConfigError, TransientError
from auto_healer.fleet import open_shared_pages
from auto_healer.guard import Guard, open_guard
from auto_healer.healer import Healer
from auto_healer.heartbeat import Heart
from auto_healer.history import ensure_history
from auto_healer.kvstore import StoreHealth
from auto_healer.liveness import Liveness
from auto_healer.logs import cache_loggers, redact_url
from auto_healer.metrics import Metrics, WsgiApp
from auto_healer.pager import Pager
from auto_healer.pathlocks import let_go_by
from auto_healer.playbooks import load_playbooks
from auto_healer.settings import Settings, default_state_dir
from auto_healer.signing import verifier_from_settings
from auto_healer.sources import Slots, Source
from auto_healer.sources.combined import Combined
from auto_healer.sources.nats_core import CoreSource
from auto_healer.sources.nats_js import JetStreamSource

log = structlog.get_logger("auto_healer.service")


def embedded_server(state_dir: Path) -> NatsServer:
    """The embedded NATS server on loopback, as a real one would be: clients on 4222 and
    monitoring on 8222, each or the next free port."""
    return NatsServer(
        state_dir / "nats", port=first_free_port(4222), monitor_port=first_free_port(8222)
    )


async def serve(
    settings: Settings, *, install_signals: bool = True, stop: asyncio.Event | None = None
) -> None:
    """Run one agent replica until SIGTERM/SIGINT, or until `stop` is set."""
    cache_loggers()  # configured by the CLI; from here on each logger binds once
    playbooks = load_playbooks(settings.playbooks_dir, breaker_max_heals=settings.breaker_max_heals)
    async with AsyncExitStack() as stack:
        url = settings.nats_url
        if not url:
            server = embedded_server(default_state_dir()).start()
            stack.callback(server.stop)
            stack.callback(publish_urls(server, urls_file()))
            url = server.url
            log.info(
                "embedded_nats_started",
                url=url,
                monitoring_url=server.monitor_url,
                store_dir=str(server.store_dir),
                urls_file=str(urls_file()),
            )
        liveness = Liveness(max_disconnected_s=settings.nats.max_disconnected_s)
        metrics = Metrics()

        def reconnected() -> None:
            liveness.reconnected()
            metrics.reconnected()

        nc = await connect(
            settings.nats,
            url,
            name=f"auto-healer-{socket.gethostname()}-{os.getpid()}",
            on_disconnected=liveness.disconnected,
            on_reconnected=reconnected,
            on_closed=liveness.closed,
        )
        metrics.watch_nats(
            connected=lambda: bool(nc.is_connected), pending_bytes=lambda: nc.pending_data_size
        )
        checkout = open_checkout(settings.git)
        stack.callback(checkout.close)
        replicas = settings.nats.replicas or default_replicas(nc)
        coordinator = await _coordinator(settings, nc, replicas)
        metrics.watch_store(coordinator.degraded)
        healer = Healer(
            playbooks,
            checkout,
            dry_run=settings.dry_run,
            coordinator=coordinator,
            max_batch=settings.max_batch,
            max_batch_files=settings.max_batch_files,
        )
        if checkout.owned and not settings.dry_run:  # the first heal's sync is then a fetch
            with contextlib.suppress(TransientError):  # that sync says it, and is retried
                await asyncio.to_thread(checkout.sync)
        paging = bool(settings.pager.webhook_url) and not settings.dry_run  # dry-run: no writes
        shared = await open_shared_pages(nc, replicas=replicas) if paging else None
        pager = Pager.from_settings(settings.pager, dry_run=settings.dry_run, shared=shared)
        if pager is not None:
            await pager.start()
            stack.push_async_callback(pager.aclose)
            metrics.watch_pager(lambda: pager.pending if pager is not None else 0)
        js = nc.jetstream() if settings.jetstream else None
        # JetStream mode: the pause and an open breaker close this gate of the injury intake
        # only, so the Hive's alerts (`--source-subject`) still come in and page meanwhile.
        gate = Slots(1)
        source = await _source(settings, nc, js, metrics, replicas, gate, liveness)
        guard = None
        if not settings.dry_run:  # a dry-run writes nothing shared and holds nothing
            controls_health = StoreHealth()  # its own: a lock answered never clears it
            if isinstance(coordinator, KvCoordinator):
                coordinator.watch(controls_health)
            guard = await open_guard(
                settings.controls,
                nc.jetstream(),
                playbooks,
                repo=healer.repo_key,
                replicas=replicas,
                signing_key=_signing_key(settings),
                health=controls_health,
            )
            metrics.watch_controls(guard.paused, guard.breaker_open)
            await ensure_history(
                nc.jetstream(), settings.controls, required=settings.jetstream, replicas=replicas
            )
        owner = f"{socket.gethostname()}-{os.getpid()}"
        mounts = await _console(settings, nc, guard, healer.repo_key, stack)
        agent = Agent(
            source=source,
            healer=healer,
            effects=Effects(
                Publisher(nc, metrics, encoding=settings.event_encoding),
                pager,
                metrics,
                js=js,
                repo=healer.repo_key,
            ),
            gate=Gate(verifier_from_settings(settings)),
            link=nc,
            liveness=liveness,
            metrics=metrics,
            max_in_flight=settings.max_in_flight,
            grace_period_s=settings.grace_period_s,
            max_queued_heals=settings.max_queued_heals,
            max_queued_heal_bytes=settings.max_queued_heal_bytes,
            heart=Heart(
                nc,
                metrics,
                settings.heartbeat_interval_s,
                lambda: {
                    **agent.details(),
                    **(guard.details() if guard else {}),
                    "replica": owner,
                },
                encoding=settings.event_encoding,
            ),
            guard=guard,
            metrics_port=_metrics_port(settings),
            metrics_host=settings.metrics_host,
            http_mounts=mounts,
        )
        if guard is not None:
            controls = asyncio.create_task(
                guard.run(
                    gate if settings.jetstream else None,
                    heal=healer.handle,
                    announce=agent.announce_aside,
                    owner=owner,
                )
            )
            stack.callback(controls.cancel)
        log.info(
            "agent_starting",
            nats_url=redact_url(url),
            repo=healer.repo_key,
            branch=checkout.branch,
            jetstream=settings.jetstream,
            dry_run=settings.dry_run,
            playbooks=[p.name for p in playbooks],
            nats_replicas=replicas,
        )
        if stop is not None:
            relay = asyncio.create_task(_relay(stop, agent.stopping))
            stack.callback(relay.cancel)
        await agent.run(install_signals=install_signals)


async def _source(
    settings: Settings,
    nc: Any,
    js: Any,
    metrics: Metrics,
    replicas: int,
    gate: Slots,
    liveness: Liveness,
) -> Source:
    """The injury intake, plus the Hive's alert subjects when asked for (core subscriptions in
    the same queue group: each alert to one replica)."""
    queue = "" if settings.dry_run else settings.queue_group
    alerts: list[Source] = [
        CoreSource(
            nc,
            subscription(pattern),
            queue=queue,
            accept=functools.partial(subject_matches, pattern),
        )
        for pattern in check_subjects(settings.source_subjects)
    ]
    intake = await _intake(settings, nc, js, queue, metrics, replicas, gate, liveness)
    return Combined([intake, *alerts]) if alerts else intake


async def _intake(
    settings: Settings,
    nc: Any,
    js: Any,
    queue: str,
    metrics: Metrics,
    replicas: int,
    gate: Slots,
    liveness: Liveness,
) -> Source:
    """Core NATS (a queue group; a dry-run listens beside it) or a JetStream pull consumer."""
    if js is None:
        return CoreSource(nc, SUBJECT_INJURY, queue=queue)
    try:
        intake = await open_intake(
            js,
            dry_run=settings.dry_run,
            max_deliver=settings.max_deliver,
            ack_wait_s=settings.ack_wait_s,
            replicas=replicas,
        )
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"cannot set up JetStream intake: {exc or type(exc).__name__}; is JetStream "
            "enabled, and may this user use the streams and consumer (see "
            "deploy/nats/nats-server.conf)?"
        ) from None
    return JetStreamSource(intake, on_idle=metrics.caught_up, gate=gate, on_lost=liveness.lost)


CONSOLE_PORT = 8080  # `run --console` without a metrics port: here, or the next free port


def _metrics_port(settings: Settings) -> int | None:
    """The metrics port; with the console and none given, 8080 or the next free one."""
    if settings.metrics_port is None and settings.console and not settings.dry_run:
        from auto_healer.embedded import first_free_port

        return first_free_port(CONSOLE_PORT)
    return settings.metrics_port


async def _console(
    settings: Settings, nc: Any, guard: Guard | None, repo: str, stack: AsyncExitStack
) -> dict[str, WsgiApp]:
    """The console's mounts on the metrics port, when asked for (`--console`)."""
    if not settings.console:
        return {}
    if guard is None:  # a dry-run writes nothing shared, so it has no controls to show
        log.warning("console_unavailable", reason="a dry-run has no operator controls")
        return {}
    from auto_healer.console import open_console

    console, heartbeats = await open_console(
        settings.console_settings,
        nc,
        guard,
        repo=repo,
        signing_key=_signing_key(settings),
    )

    async def unsubscribe() -> None:
        with contextlib.suppress(Exception):  # the connection may be closed by then
            await heartbeats.unsubscribe()

    stack.push_async_callback(unsubscribe)
    return console.mounts


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _coordinator(settings: Settings, nc: Any, replicas: int) -> Coordinator:
    """KV coordination when the server has JetStream; in-process otherwise (core mode only).

    A dry-run replica never writes the shared KV: its claims and locks would throttle or block
    the real replicas.
    """
    if settings.dry_run:
        return LocalCoordinator()
    # Unique to this process: a path lock with our owner is taken back as our own orphan
    # (`KvCoordinator.take_lock`), so a restarted container (same host name, pid 1) or two
    # replicas given one host name must never share it.
    owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        coordinator = await KvCoordinator.create(
            nc.jetstream(),
            owner=owner,
            lock_ttl_s=settings.lock_ttl_s,
            lock_wait_s=0.0 if settings.jetstream else 60.0,
            replicas=replicas,
        )
        coordinator.let_go = let_go_by(nc.publish)  # a batch's locks, let go of unanswered
        return coordinator
    except Exception as exc:
        if settings.jetstream:
            raise ConfigError(f"JetStream KV is not available on the server: {exc}") from None
        log.warning("kv_unavailable_local_locks_only", error=str(exc) or type(exc).__name__)
        return LocalCoordinator()


def _signing_key(settings: Settings) -> bytes | None:
    """INJURY_SIGNING_KEY as bytes: approvals are signed and verified with it, replays signed."""
    key = settings.injury_signing_key
    return key.get_secret_value().encode() if key else None
