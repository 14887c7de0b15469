"""The NATS side of the agent: connection options, JetStream setup, and resilient publishing.

Publishing follows the seed's graceful-degradation pattern plus a bounded, jittered retry: a
NATS hiccup is logged and counted, never raised into the heal loop.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from tenacity import retry_if_exception_type

from auto_healer.assets import DEAD_LETTER_STREAM as DEAD_LETTER_STREAM
from auto_healer.assets import DURABLE
from auto_healer.assets import STREAM as STREAM
from auto_healer.assets import ensure_streams as ensure_streams  # set up here before
from auto_healer.assets import injury_stream as injury_stream
from auto_healer.contracts import SUBJECT_INJURY
from auto_healer.encoding import Encoding, encode, json_size
from auto_healer.errors import ConfigError
from auto_healer.fit import fit_dead_letter, safe_header_key, safe_header_value, wire_size
from auto_healer.logs import redact_url
from auto_healer.metrics import Metrics
from auto_healer.retry import RetryPolicy
from auto_healer.settings import NatsSettings

log = structlog.get_logger("auto_healer.bloodstream")

DEAD_LETTER_SUBJECT = "aura.hive.dead_letter.injury"
PUBLISH_RETRY = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=2.0)
SETUP_RETRY = RetryPolicy(attempts=4, backoff_s=1.0, max_backoff_s=5.0)  # start-up: ~10 s more
TRANSIENT_NATS = (
    nats.errors.ConnectionClosedError,
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.FlushTimeoutError,
    nats.errors.ConnectionReconnectingError,
)


def connect_options(settings: NatsSettings, url: str, *, name: str) -> dict[str, Any]:
    """nats-py `connect()` keyword arguments from settings: servers, auth, TLS, reconnect."""
    opts: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",") if u.strip()],
        "name": name,
        "max_reconnect_attempts": -1,  # reconnect forever
        "reconnect_time_wait": 2,
        "connect_timeout": 5,
        "allow_reconnect": True,
    }
    if settings.user:
        opts["user"] = settings.user
        if settings.password:
            opts["password"] = settings.password.get_secret_value()
    if settings.token:
        opts["token"] = settings.token.get_secret_value()
    if settings.creds_file:
        opts["user_credentials"] = str(settings.creds_file)
    if settings.nkey_seed_file:
        opts["nkeys_seed"] = str(settings.nkey_seed_file)
    if settings.tls_ca_file or settings.tls_cert_file:
        ctx = ssl.create_default_context(cafile=settings.tls_ca_file)
        if settings.tls_cert_file:
            ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        opts["tls"] = ctx
    return opts


def _noop() -> None:
    return None


async def connect(
    settings: NatsSettings,
    url: str,
    *,
    name: str,
    initial_attempts: int = 5,
    connect_timeout_s: float = 5.0,
    retry_wait_s: float = 2.0,
    on_disconnected: Callable[[], None] = _noop,
    on_reconnected: Callable[[], None] = _noop,
    on_closed: Callable[[], None] = _noop,
    closes_itself: bool = False,
) -> Any:
    """Connect, giving up after `initial_attempts` retries `retry_wait_s` apart (one clear error
    for a wrong URL or credentials; the failed tries at debug), then reconnect forever;
    disconnects, reconnects and a close are logged and reported to the `on_*` callbacks (the
    agent's liveness). A one-shot client that `closes_itself` logs its close at debug level."""
    failures: list[Exception] = []

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats_disconnected")
            on_disconnected()

    async def reconnected() -> None:
        log.info(
            "nats_reconnected",
            server=redact_url(str(nc.connected_url.geturl() if nc.connected_url else "")),
        )
        on_reconnected()

    async def closed() -> None:
        (log.debug if closes_itself else log.warning)("nats_connection_closed")
        on_closed()

    async def error(exc: Exception) -> None:
        if connecting:
            failures.append(exc)
            log.debug("nats_connect_failed", error=str(exc) or type(exc).__name__)
        else:
            log.warning("nats_error", error=str(exc) or type(exc).__name__)

    cbs: dict[str, Any] = {"disconnected_cb": disconnected, "reconnected_cb": reconnected}
    connecting = True
    opts = connect_options(settings, url, name=name)
    first = {"connect_timeout": connect_timeout_s, "reconnect_time_wait": retry_wait_s}
    first["max_reconnect_attempts"] = initial_attempts
    try:
        nc = await nats.connect(**{**opts, **first}, **cbs, closed_cb=closed, error_cb=error)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        # The server's own refusal (authorization) says more than a later reset of the socket.
        refused = [f for f in failures if isinstance(f, nats.errors.Error)]
        why = (refused or failures or [exc])[0 if refused else -1]
        text = str(why) or type(why).__name__
        raise ConfigError(f"cannot connect to NATS at {redact_url(url)}: {text}") from why
    connecting = False
    nc.options.update({k: opts[k] for k in first})  # read at each reconnect: now never give up
    survive_undecodable(nc)
    return nc


def survive_undecodable(nc: Any) -> None:
    """nats-py ends its read loop for good on a message it cannot decode (a header block or a
    subject that is no UTF-8, which any client may publish), the connection still looking up:
    nothing is received again until its pings go stale. Such a header block is taken as none
    (the message is judged without it) and such a message is dropped, each with a warning."""
    headers_of, message_of = nc._process_headers, nc._process_msg

    async def process_headers(headers: Any) -> Any:
        try:
            return await headers_of(headers)
        except UnicodeDecodeError as exc:
            log.warning("nats_headers_undecodable", error=str(exc))
            return None

    async def process_msg(*args: Any, **kwargs: Any) -> None:
        try:
            await message_of(*args, **kwargs)
        except Exception as exc:  # whatever it was, the read loop must live on
            log.warning("nats_message_undecodable", error=str(exc) or type(exc).__name__)

    nc._process_headers, nc._process_msg = process_headers, process_msg


@dataclass(frozen=True)
class Intake:
    """A bound JetStream pull subscription and the limits its consumer really has.

    `max_deliver` is the heal budget: the consumer's own limit when it has one, else (an
    `unlimited` consumer, which redelivers until settled) the agent's `MAX_DELIVER`.
    """

    psub: Any
    stream: str
    max_deliver: int
    ack_wait_s: float
    durable: bool
    unlimited: bool = False
    max_ack_pending: int = 0  # the consumer's; 0: no limit


async def open_intake(
    js: JetStreamContext,
    *,
    dry_run: bool,
    max_deliver: int,
    ack_wait_s: float,
    replicas: int = 1,
) -> Intake:
    """Bind to the shared durable consumer or, in dry-run, to a private ephemeral one.

    A dry-run replica must not take injuries from the real ones: it reads new injuries through
    its own consumer, and creates no stream. The consumer's own `max_deliver` and `ack_wait`
    are used (an existing consumer may differ from the settings). New streams get `replicas`.
    An API call that times out is tried again (every step binds to what an earlier try made):
    a cluster still electing the leader of a stream just created answers late.
    """
    retrying = SETUP_RETRY.retrying(
        retry_if_exception_type(nats.errors.TimeoutError),
        before_sleep=lambda rs: log.warning("intake_setup_retry", attempt=rs.attempt_number),
    )
    async for attempt in retrying:
        with attempt:
            return await _open_intake(
                js,
                dry_run=dry_run,
                max_deliver=max_deliver,
                ack_wait_s=ack_wait_s,
                replicas=replicas,
            )
    raise AssertionError("unreachable: the retry loop returns or raises")


async def _open_intake(
    js: JetStreamContext, *, dry_run: bool, max_deliver: int, ack_wait_s: float, replicas: int
) -> Intake:
    if dry_run:
        stream = await injury_stream(js)
        if stream is None:
            raise ConfigError(
                f"no stream captures {SUBJECT_INJURY}; a dry-run creates none "
                "(run without --dry-run once, or without --jetstream)"
            )
        psub = await js.pull_subscribe(
            SUBJECT_INJURY,
            durable=None,
            stream=stream,
            config=(
                ConsumerConfig(
                    deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.EXPLICIT,
                    inactive_threshold=300.0,
                    ack_wait=ack_wait_s,
                    max_deliver=max_deliver,
                )
            ),
        )
    else:
        stream = await ensure_streams(
            js, max_deliver=max_deliver, ack_wait_s=ack_wait_s, replicas=replicas
        )
        psub = await js.pull_subscribe(SUBJECT_INJURY, durable=DURABLE, stream=stream)
    config = (await psub.consumer_info()).config
    actual_deliver = config.max_deliver if config.max_deliver and config.max_deliver > 0 else 0
    if actual_deliver and actual_deliver != max_deliver:
        log.warning("consumer_max_deliver_differs", consumer=max_deliver, used=actual_deliver)
    return Intake(
        psub,
        stream,
        actual_deliver or max_deliver,
        config.ack_wait or ack_wait_s,
        durable=not dry_run,
        unlimited=not actual_deliver,
        max_ack_pending=max(0, config.max_ack_pending or 0),
    )


class Publisher:
    """Publishes events and dead letters with bounded retries; failures are logged and counted,
    never raised. Every message is first fitted to the connection's `max_payload` (truncated,
    never dropped): one over it would make the server close the connection for good."""

    def __init__(
        self, nc: Any, metrics: Metrics, *, attempts: int = 3, encoding: Encoding = "json"
    ) -> None:
        self.nc = nc
        self.metrics = metrics
        self.attempts = attempts
        self.encoding: Encoding = encoding
        self._published: dict[str, Any] = {}  # the counter of each subject published on

    async def publish_event(self, subject: str, doc: dict[str, Any]) -> bool:
        """Publish an outcome event in the publisher's encoding (JSON or an `aura.core.v1.Event`,
        said by `Content-Type`), its largest parts truncated if it is too big."""
        return await self.publish(subject, doc)

    async def publish_dead_letter(
        self, subject: str, body: bytes, headers: dict[str, str], *, js: Any = None
    ) -> bool:
        """Publish a dead letter (through JetStream when `js` is given), its headers made safe
        and its body cut to a prefix, with the original size and sha256, if it is too big."""
        return await self.publish(subject, body, headers, js=js)

    async def publish(
        self,
        subject: str,
        payload: dict[str, Any] | bytes,
        headers: dict[str, str] | None = None,
        *,
        js: Any = None,
    ) -> bool:
        """Publish a dict as a fitted event (in the publisher's encoding), bytes as a fitted
        dead letter; True if sent."""
        try:
            data, fitted, cut, wire = self._fit(subject, payload, headers)
            if cut:
                size = len(payload) if isinstance(payload, bytes) else json_size(payload)
                log.warning("nats_message_truncated", topic=subject, size=size, sent=len(data))
            try:  # the common case costs one call; the retry machinery runs only after a failure
                await self._send(subject, data, fitted, js, wire)
            except TRANSIENT_NATS:
                retrying = PUBLISH_RETRY.retrying(
                    retry_if_exception_type(TRANSIENT_NATS), attempts=max(1, self.attempts - 1)
                )
                async for attempt in retrying:
                    with attempt:
                        await self._send(subject, data, fitted, js, wire)
        except Exception as exc:  # graceful degradation: the agent survives a lost event
            self.metrics.failed.labels(topic=subject).inc()
            log.warning("nats_publish_failed", topic=subject, error=str(exc) or repr(exc))
            return False
        counted = self._published.get(subject)
        if counted is None:  # `labels()` checks and locks on every call: once per subject
            counted = self.metrics.published.labels(topic=subject)
            if len(self._published) < 256:  # event subjects are few; others are not kept
                self._published[subject] = counted
        counted.inc()
        return True

    def _fit(
        self, subject: str, payload: dict[str, Any] | bytes, headers: dict[str, str] | None
    ) -> tuple[bytes, dict[str, str] | None, bool, int]:
        """The body, headers and whether it was cut, and its size on the wire (-1: unknown)."""
        max_payload = int(self.nc.max_payload)
        if isinstance(payload, bytes):
            body, fitted = fit_dead_letter(payload, headers or {}, max_payload)
            return body, fitted or None, len(body) < len(payload), -1
        safe = (
            {safe_header_key(k): safe_header_value(v) for k, v in headers.items()}
            if headers
            else None
        )
        wire = encode(
            subject, payload, encoding=self.encoding, max_payload=max_payload, headers=safe
        )
        return wire.data, wire.headers, wire.cut, wire.size

    async def _send(
        self, subject: str, data: bytes, headers: dict[str, str] | None, js: Any, size: int = -1
    ) -> None:
        # nats-py checks the body alone; the server counts the headers too, and closes the
        # connection when the sum is over: refuse this one message instead.
        if (size if size >= 0 else wire_size(data, headers)) > self.nc.max_payload:
            raise nats.errors.MaxPayloadError
        if js is not None:
            await js.publish(subject, data, headers=headers)
        else:
            await self.nc.publish(subject, data, headers=headers)
