"""Honest metrics: lag from the transport's time and 0 when caught up, process and NATS
connection metrics, the pager's backlog, on a real agent process and in the real pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import nats
from auto_healer.bloodstream import ensure_streams
from auto_healer.embedded import NatsServer, free_port
from auto_healer.metrics import SUBSCRIBER, Metrics

from tests.agent_support import AgentProcess, Events, wait_until
from tests.conftest import injury
from tests.inprocess import delivery, run_agent
from tests.test_agent import _payload, _publish

LAG = "aura_nats_subscriber_lag_seconds"
YEARS_OLD = 1735920000.456 - 6.0e7  # a payload clock 1.9 years behind: never a lag source


def lag_of(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(LAG, {"subscriber": SUBSCRIBER})
    assert value is not None, "the lag gauge was never set"
    return float(value)


async def test_core_lag_is_zero_once_nothing_is_in_flight(repo: tuple[Path, Path]) -> None:
    """On core NATS the lag reads 0 when the last heal is done, whatever the payload's clock."""
    _, work = repo
    d, _ = delivery(json.dumps(injury("core/x/", auto_heal=False, timestamp=YEARS_OLD)).encode())
    metrics = Metrics()
    await run_agent(work, [d], metrics=metrics)
    assert lag_of(metrics) == 0.0


async def test_jetstream_lag_comes_from_the_stream_time(repo: tuple[Path, Path]) -> None:
    """A JetStream delivery's lag is from its stream time (100 s ago), not its payload's."""
    _, work = repo
    d, _ = delivery(
        json.dumps(injury("core/x/", auto_heal=False, timestamp=YEARS_OLD)).encode(),
        max_attempts=10,
    )
    stream_time = time.time() - 100.0
    d = type(d)(**{**d.__dict__, "received_at": stream_time})
    metrics = Metrics()
    await run_agent(work, [d], metrics=metrics)
    lag = lag_of(metrics)
    assert 100.0 <= lag < 160.0


async def test_jetstream_lag_returns_to_zero_when_the_consumer_is_empty(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """An injury that waited in the stream is handled; once the consumer is empty, lag is 0."""
    remote, _work = repo
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream(), max_deliver=10, ack_wait_s=60)
    await nc.drain()
    await _publish(
        nats_server.url, _payload("core/src/x/", auto_heal=False, timestamp=YEARS_OLD),
        jetstream=True,
    )  # fmt: skip
    time.sleep(1.5)  # the injury waits in the stream before any replica runs
    events = await Events().start(nats_server.url)
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True)
    try:
        agent.wait_ready()
        await events.wait_for(1)
        await wait_until(
            lambda: agent.metric(LAG, subscriber=SUBSCRIBER) == 0.0,
            10,
            "the lag to read 0 after an empty fetch",
            seen=lambda: agent.metric(LAG, subscriber=SUBSCRIBER),
        )
    finally:
        await events.close()
        agent.kill()


async def test_process_nats_and_pager_metrics(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Process/platform/GC collectors, the NATS link (state, reconnects, buffer), the outbox."""
    remote, _work = repo
    down = f"http://127.0.0.1:{free_port()}/"  # nobody listens: the page waits in the outbox
    env = {"PAGER_WEBHOOK_URL": down, "PAGER_FORMAT": "pagerduty",
           "PAGER_ROUTING_KEY": "R0UTING-KEY", "PAGER_ATTEMPTS": "1", "PAGER_BACKOFF_S": "0.05",
           "PAGER_DRAIN_INTERVAL_S": "0.2"}  # fmt: skip
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, env=env)
    try:
        agent.wait_ready()
        assert agent.metric("auto_healer_nats_connected") == 1.0
        assert agent.metric("process_resident_memory_bytes") > 0
        assert agent.metric("process_cpu_seconds_total") > 0
        assert agent.metric("python_gc_collections_total") > 0
        assert agent.metric("python_info") == 1.0
        _, text = agent.get("/metrics")
        assert "auto_healer_nats_pending_bytes " in text
        await _publish(nats_server.url, _payload("core/src/x/", auto_heal=False))
        await wait_until(
            lambda: agent.metric("auto_healer_pager_outbox_pending") == 1.0,
            15,
            "the undelivered page to wait in the outbox",
        )
        nats_server.stop()
        await wait_until(
            lambda: agent.metric("auto_healer_nats_connected") == 0.0, 15, "the disconnect"
        )
        nats_server.start()
        await wait_until(
            lambda: agent.metric("auto_healer_nats_reconnects_total") == 1.0,
            20,
            "one reconnect to be counted",
            seen=agent.logs,
        )
        assert agent.metric("auto_healer_nats_connected") == 1.0
    finally:
        agent.kill()


def test_a_client_that_stops_mid_request_is_let_go() -> None:
    """A request that promises a body it never sends has its connection closed after the
    client timeout, instead of holding a server thread for ever."""
    import socket

    from auto_healer.metrics import HealthServer

    def reads_its_body(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = HealthServer(
        Metrics(),
        0,
        ready=lambda: True,
        alive=lambda: True,
        mounts={"/api": reads_its_body},
        client_timeout_s=0.3,
    ).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            started = time.monotonic()
            while s.recv(4096):  # whatever it answers, it must then close
                pass
            assert time.monotonic() - started < 4
    finally:
        server.stop()
