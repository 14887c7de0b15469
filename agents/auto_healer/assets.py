"""The JetStream assets the agent owns, with the replicas a cluster needs.

Streams `AURA_INJURIES` and `AURA_DEAD_LETTERS`, the durable consumer `auto-healer` and the KV
buckets (locks, healed ids, throttle, pages) are created with `NATS_REPLICAS` replicas: by
default the cluster's size as the server's INFO tells it (`connect_urls`), capped at 3, and 1
on a single server. An asset that exists with fewer replicas is reported at start-up with the
command that fixes it, and never changed: an operator decides. `auto-healer setup-nats` creates
them all ahead of time with an admin identity (`setup_nats`), so the agent's own user needs no
CREATE grant.

The consumer is created with `max_deliver = -1`: JetStream redelivers for as long as it takes,
and the agent enforces its own budget of heal attempts (`MAX_DELIVER`), so a coordination outage
naks without using up an injury's deliveries (see `decision`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from auto_healer.contracts import SUBJECT_INJURY
from auto_healer.errors import ConfigError

if TYPE_CHECKING:  # nats-py is imported where it is used: the one-shot heal never needs it
    from nats.js import JetStreamContext

log = structlog.get_logger("auto_healer.assets")

STREAM = "AURA_INJURIES"
DURABLE = "auto-healer"
DEAD_LETTER_STREAM = "AURA_DEAD_LETTERS"
BUCKET_LOCKS = "auto-healer-locks"
BUCKET_HEALED = "auto-healer-healed"
BUCKET_THROTTLE = "auto-healer-throttle"
BUCKET_PAGES = "auto-healer-pages"
BUCKETS = (BUCKET_LOCKS, BUCKET_HEALED, BUCKET_THROTTLE)
HEALED_TTL_S = 7 * 86400
MAX_AUTO_REPLICAS = 3  # JetStream's useful maximum (R5 costs more than it buys here)
UNLIMITED = -1  # a consumer's max_deliver: redeliver until the agent settles


def cluster_size(server_info: Mapping[str, Any]) -> int:
    """How many servers the cluster has, from a server's INFO: 1 unless it names a cluster.

    A clustered server lists every node's client URL (itself included) in `connect_urls`; a
    cluster that advertises none (`no_advertise`) counts as 1 here (set NATS_REPLICAS).
    """
    if not server_info.get("cluster"):
        return 1
    return max(1, len(set(server_info.get("connect_urls") or [])))


def default_replicas(nc: Any) -> int:
    """The replicas to ask for when NATS_REPLICAS is not set: the cluster's size, at most 3."""
    return min(MAX_AUTO_REPLICAS, cluster_size(getattr(nc, "_server_info", {}) or {}))


def stream_fix(stream: str, replicas: int) -> str:
    """The `nats` CLI command that raises a stream's replicas (a KV bucket is the stream
    `KV_<bucket>`)."""
    return f"nats stream edit {stream} --replicas {replicas} --force"


async def report_replicas(js: JetStreamContext, stream: str, wanted: int) -> bool:
    """Warn (with the fix) when an existing stream has fewer replicas than wanted; True if ok.

    Never changes the stream: a replica change moves data between nodes, an operator's call.
    """
    have = (await js.stream_info(stream)).config.num_replicas or 1
    if have >= wanted:
        return True
    log.warning(
        "nats_asset_under_replicated",
        stream=stream,
        replicas=have,
        wanted=wanted,
        fix=stream_fix(stream, wanted),
        detail="a loss of the node holding it stops healing until it is back",
    )
    return False


async def injury_stream(js: JetStreamContext) -> str | None:
    """The name of the stream that captures `aura.hive.injury`, if there is one."""
    from nats.js.errors import NotFoundError

    try:
        return str(await js.find_stream_name_by_subject(SUBJECT_INJURY))
    except NotFoundError:
        return None


async def ensure_streams(
    js: JetStreamContext, *, max_deliver: int, ack_wait_s: float, replicas: int = 1
) -> str:
    """Make sure a stream captures injuries, plus the dead-letter stream and the durable consumer.

    An existing stream that captures `aura.hive.injury` is used as it is when it can keep
    injuries across a restart; one that cannot (memory storage, sealed) is a clear error and is
    never changed. New streams get `replicas`; existing ones with fewer are reported. The new
    consumer redelivers without limit (`max_deliver` is the agent's own heal budget); an
    existing one with a limit is reported. Returns the name of the injury stream.
    """
    from nats.js.api import (
        AckPolicy,
        ConsumerConfig,
        DeliverPolicy,
        RetentionPolicy,
        StorageType,
        StreamConfig,
    )
    from nats.js.errors import NotFoundError

    stream = await injury_stream(js)
    if stream is None:
        stream = STREAM
        await js.add_stream(
            StreamConfig(
                name=STREAM,
                subjects=[SUBJECT_INJURY],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=7 * 86400.0,
                duplicate_window=360.0,  # past SIGNATURE_MAX_AGE_S + skew: a replay is a duplicate
                num_replicas=replicas,
                description="bee-keeper injuries, captured for the auto-healer",
            )
        )
    else:
        config = (await js.stream_info(stream)).config
        if config.storage != StorageType.FILE or config.sealed:
            raise ConfigError(
                f"stream {stream!r} captures {SUBJECT_INJURY} but is "
                f"{'sealed' if config.sealed else 'in memory'}: injuries would be lost; use a "
                "file-backed stream (auto-healer never changes an existing stream)"
            )
        await report_replicas(js, stream, replicas)
    try:
        await js.stream_info(DEAD_LETTER_STREAM)
        await report_replicas(js, DEAD_LETTER_STREAM, replicas)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=DEAD_LETTER_STREAM,
                subjects=["aura.hive.dead_letter.>"],
                storage=StorageType.FILE,
                num_replicas=replicas,
                description="injuries the auto-healer could not take",
            )
        )
    try:
        consumer = await js.consumer_info(stream, DURABLE)
        limit = consumer.config.max_deliver
        if limit is not None and limit > 0:
            log.warning(
                "consumer_max_deliver_limited",
                max_deliver=limit,
                fix=f"nats consumer edit {stream} {DURABLE} --max-deliver=-1",
                detail="a coordination outage on an injury's last delivery pages it",
            )
    except NotFoundError:
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait_s,
                max_deliver=UNLIMITED,
                filter_subject=SUBJECT_INJURY,
                max_ack_pending=1000,
            ),
        )
    return stream


async def setup_nats(
    nc: Any, *, replicas: int | None, max_deliver: int, ack_wait_s: float, lock_ttl_s: float
) -> dict[str, int]:
    """Create every stream, the consumer and every KV bucket the agent uses (`setup-nats`).

    Existing assets are kept as they are (and reported when under-replicated). Returns each
    asset's stream and the replicas it has now.
    """
    from auto_healer.fleet import open_pages_bucket

    wanted = replicas or default_replicas(nc)
    js = nc.jetstream()
    stream = await ensure_streams(
        js, max_deliver=max_deliver, ack_wait_s=ack_wait_s, replicas=wanted
    )
    await open_buckets(js, lock_ttl_s=lock_ttl_s, replicas=wanted)
    await open_pages_bucket(js, replicas=wanted)
    names = [stream, DEAD_LETTER_STREAM, *[f"KV_{b}" for b in (*BUCKETS, BUCKET_PAGES)]]
    return {n: (await js.stream_info(n)).config.num_replicas or 1 for n in names}


async def open_buckets(
    js: Any, *, lock_ttl_s: float, healed_ttl_s: float = HEALED_TTL_S, replicas: int = 1
) -> tuple[Any, Any, Any]:
    """The locks, healed-ids and throttle buckets, created with `replicas` when missing. Their
    per-injury calls go through one reply subscription (`kvwire`), their reads to the stream's
    leader; their other calls are nats-py's (`leader_reads`)."""
    from auto_healer.kvwire import KvWire, Replies

    names = (BUCKET_LOCKS, BUCKET_HEALED, BUCKET_THROTTLE)
    ttls_s = (lock_ttl_s, healed_ttl_s, HEALED_TTL_S)
    for name, ttl_s in zip(names, ttls_s, strict=True):
        await open_bucket(js, name, ttl_s=ttl_s, replicas=replicas)
    # nats-py keeps a context's connection, API prefix (domain) and timeout private
    replies = await Replies(js._nc, timeout_s=js._timeout).start()
    locks, healed, throttle = (
        KvWire(replies, leader_reads(js, name), name=name, api_prefix=js._prefix) for name in names
    )
    return locks, healed, throttle


async def open_bucket(js: Any, name: str, *, ttl_s: float, replicas: int = 1) -> Any:
    """Bind to a KV bucket (reporting too few replicas), or create it with `replicas`."""
    from nats.js.errors import BucketNotFoundError

    try:
        kv = await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=name, ttl=ttl_s, history=1, replicas=replicas)
    await report_replicas(js, f"KV_{name}", replicas)
    return kv


def leader_reads(js: Any, name: str) -> Any:
    """Bucket `name` whose gets go to its stream's leader (`$JS.API.STREAM.MSG.GET`), never
    through Direct Get, even where the stream allows it (`nats kv add` and nats.go create
    buckets with `allow_direct`).

    The coordination reads decide: the healed-id read under a path lock must see the id the
    previous holder recorded (acked) before it let go, or an injury heals twice. A Direct Get
    is answered by any replica of the stream and by mirrors with `mirror_direct`, which may
    not have applied that write yet (ADR-31's note on read-after-write; nats-server #6557,
    #4710); on an R1 bucket too, once it is mirrored or scaled up while the agent runs. Only
    a `min_last_seq` (ADR "JetStream Read-after-Write", server 2.12) makes one safe, and it
    needs the sequence of a write another replica made.
    """
    from nats.js.kv import KeyValue

    return KeyValue(name=name, stream=f"KV_{name}", pre=f"$KV.{name}.", js=js, direct=False)
