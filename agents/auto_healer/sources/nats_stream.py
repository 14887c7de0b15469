"""The one-shot's stream source: the injuries a JetStream stream captured since a time.

`auto-healer heal --from-stream --since T` reads what reached the stream that captures
`aura.hive.injury` (bee-keeper publishes with a plain core publish; the stream keeps it) from
T up to the stream's last message when the read starts, so the read ends. It reads through an
ephemeral pull consumer that acks nothing and is deleted afterwards (the server drops it by
itself if we die): the stream and the agents' shared durable stay as they were, dry-run or not.
Each message becomes a delivery as it is (bytes, headers, stream time); admission decides what
it means.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from auto_healer.bloodstream import injury_stream
from auto_healer.clients import connect_client
from auto_healer.contracts import SUBJECT_INJURY
from auto_healer.errors import ConfigError, TransientError
from auto_healer.logs import redact_url
from auto_healer.settings import NatsSettings
from auto_healer.sources import Delivery

__all__ = [
    "RUN_STARTED_AT_ENV",
    "fetch_since",
    "parse_since",
    "read_stream",
    "read_with",
    "since_run",
]

RUN_STARTED_AT_ENV = "GITHUB_RUN_STARTED_AT"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)([smhdw]))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_EPOCH = re.compile(r"\d+(?:\.\d+)?")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A start time (UTC) from ISO-8601 (no zone = UTC), a Unix epoch in seconds, or a
    duration before `now` (`90s`, `15m`, `2h`, `1d`, `1h30m`); `ConfigError` naming the value."""
    value = text.strip()
    if _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        if _EPOCH.fullmatch(value):
            return datetime.fromtimestamp(float(value), UTC)
        when = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise ConfigError(
            f"--since {text!r}: not an ISO-8601 time, a Unix epoch or a duration like 15m or 2h"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def since_run(environ: Mapping[str, str]) -> datetime:
    """The start of the GitHub Actions run to heal after, from `GITHUB_RUN_STARTED_AT`."""
    value = environ.get(RUN_STARTED_AT_ENV, "").strip()
    if not value:
        raise ConfigError(
            f"--since-run needs {RUN_STARTED_AT_ENV} (in a workflow_run job: "
            f"{RUN_STARTED_AT_ENV}: ${{{{ github.event.workflow_run.run_started_at }}}}), "
            "or pass --since TIME"
        )
    try:
        return parse_since(value)
    except ConfigError:
        raise ConfigError(f"{RUN_STARTED_AT_ENV}={value!r} is not a time") from None


def read_stream(
    settings: NatsSettings,
    url: str,
    *,
    since: datetime,
    stream: str | None = None,
    timeout_s: float = 10.0,
    subject: str = SUBJECT_INJURY,
) -> list[Delivery]:
    """Every message on `subject` (default `aura.hive.injury`) the stream holds from `since`
    (see `fetch_since`)."""
    return asyncio.run(
        fetch_since(settings, url, since=since, stream=stream, timeout_s=timeout_s, subject=subject)
    )


async def fetch_since(
    settings: NatsSettings,
    url: str,
    *,
    since: datetime,
    stream: str | None = None,
    timeout_s: float = 10.0,
    batch: int = 256,
    subject: str = SUBJECT_INJURY,
) -> list[Delivery]:
    """Connect, read the injuries of `stream` (default: the one capturing `aura.hive.injury`)
    from `since` up to its last message now, and close. `ConfigError` when there is no such
    stream or no JetStream; `TransientError` when the server stops answering mid-read."""
    nc = await connect_client(settings, url, name="auto-healer-heal")
    try:
        js = nc.jetstream(timeout=timeout_s)
        try:
            name = await _stream_name(js, stream)
            return await _read(js, name, since, timeout_s=timeout_s, batch=batch, subject=subject)
        except ServiceUnavailableError:
            raise ConfigError(
                f"NATS at {redact_url(url)} has no JetStream: no stream can hold injuries"
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise TransientError(f"NATS at {redact_url(url)} stopped answering") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout_s)


async def _stream_name(js: JetStreamContext, stream: str | None) -> str:
    if stream is None:
        found = await injury_stream(js)
        if found is None:
            raise ConfigError(
                f"no JetStream stream captures {SUBJECT_INJURY}: create one (`auto-healer run "
                "--jetstream` does, or `nats stream add`), or name it with --stream"
            )
        return found
    try:
        await js.stream_info(stream)
    except NotFoundError:
        raise ConfigError(f"stream {stream!r} does not exist") from None
    except (APIError, ValueError) as exc:  # ValueError: nats-py refuses the name itself
        raise ConfigError(f"stream {stream!r}: {exc}") from None
    return stream


async def read_with(
    js: JetStreamContext, stream: str, since: datetime, *, subject: str, timeout_s: float = 10.0
) -> list[Delivery]:
    """What `fetch_since` reads, on a connection the caller keeps (the console's, the agent's);
    nothing when the stream does not exist."""
    try:
        return await _read(js, stream, since, timeout_s=timeout_s, batch=256, subject=subject)
    except NotFoundError:
        return []


async def _read(
    js: JetStreamContext,
    stream: str,
    since: datetime,
    *,
    timeout_s: float,
    batch: int,
    subject: str = SUBJECT_INJURY,
) -> list[Delivery]:
    """From `since` to the stream's last sequence at the start, in order, through a consumer
    made for this read only."""
    state = (await js.stream_info(stream)).state
    if not state.messages:
        return []
    last = state.last_seq
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        filter_subject=subject,
        mem_storage=True,
        num_replicas=1,
        inactive_threshold=max(60.0, 3 * timeout_s),  # gone by itself if we die mid-read
        description="auto-healer: one read of a stream, then deleted",
    )
    try:
        info = await js.add_consumer(stream, config)
    except APIError as exc:
        raise ConfigError(f"stream {stream!r}: cannot read {subject}: {exc}") from None
    psub = await js.pull_subscribe_bind(consumer=info.name, stream=stream)
    deliveries: list[Delivery] = []
    try:
        pending = info.num_pending or 0
        while pending > 0:
            try:
                msgs = await psub.fetch(batch=min(batch, pending), timeout=timeout_s)
            except (nats.errors.TimeoutError, TimeoutError):
                raise TransientError(
                    f"stream {stream!r}: no message within {timeout_s:g}s with {pending} pending"
                ) from None
            for msg in msgs:
                meta = msg.metadata
                if meta.sequence.stream > last:  # published after the read began
                    return deliveries
                deliveries.append(_delivery(msg, meta))
                pending = 0 if meta.sequence.stream == last else meta.num_pending
        return deliveries
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, info.name)


def _delivery(msg: Any, meta: Any) -> Delivery:
    return Delivery(
        data=msg.data,
        subject=msg.subject,
        received_at=meta.timestamp.timestamp(),
        headers=dict(msg.headers or {}),
    )
