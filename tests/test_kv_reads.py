"""The coordination reads that decide go to the stream's leader, whatever the bucket allows;
the cheap paths of every KV call (keys, store health, log context) keep their behaviour."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import structlog
from auto_healer.assets import BUCKET_HEALED, BUCKET_THROTTLE, HEALED_TTL_S
from auto_healer.coordination import KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.logs import bound


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.drain()


async def _requests(nc: Any, subject: str) -> list[str]:
    """Every request published on `subject` from now on (a copy: the server answers it)."""
    seen: list[str] = []

    async def note(msg: Any) -> None:
        seen.append(msg.subject)

    await nc.subscribe(subject, cb=note)
    return seen


async def test_deciding_reads_skip_direct_get_on_a_bucket_that_allows_it(nc: Any) -> None:
    """Buckets made by `nats kv add` allow Direct Get (any replica answers, maybe stale): the
    healed-id and throttle reads still go to the stream leader's MSG.GET."""
    js = nc.jetstream()
    for bucket in (BUCKET_HEALED, BUCKET_THROTTLE):  # as an operator's `nats kv add` makes them
        await js.create_key_value(bucket=bucket, ttl=HEALED_TTL_S, history=1, direct=True)
    direct = await _requests(nc, "$JS.API.DIRECT.GET.>")
    leader = await _requests(nc, "$JS.API.STREAM.MSG.GET.>")
    a = await KvCoordinator.create(js, owner="a")
    b = await KvCoordinator.create(js, owner="b")

    assert await b.healed_commit("bee-1") is None
    await a.mark_healed("bee-1", "c0ffee")
    assert await b.healed_commit("bee-1") == "c0ffee"
    assert await a.claim_window("w", 60, "bee-1")
    assert not await b.claim_window("w", 60, "bee-2")  # reads who holds the window
    await nc.flush()

    assert direct == []
    assert sorted(set(leader)) == [
        f"$JS.API.STREAM.MSG.GET.KV_{BUCKET_HEALED}",
        f"$JS.API.STREAM.MSG.GET.KV_{BUCKET_THROTTLE}",
    ]


async def test_a_missing_key_is_an_answer_not_an_outage(nc: Any) -> None:
    """A read of an id never healed leaves the store healthy; a failed call marks it degraded
    until the next answer."""
    coord = await KvCoordinator.create(nc.jetstream(), owner="a")
    async with coord.health.store("probe"):
        pass
    with pytest.raises(Exception, match="coordination store unavailable"):
        async with coord.health.store("probe"):
            raise OSError("link down")
    assert coord.degraded() is not None
    assert await coord.healed_commit("never-seen") is None
    assert coord.degraded() is None


def test_kv_keys_stay_those_older_replicas_wrote() -> None:
    """A rolling upgrade shares buckets with older replicas: the key of a text is unchanged."""
    for parts in (("bee-1",), ("attempts", "bee-1"), ("repo|a/b",)):
        old = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]
        assert kv_key(*parts) == old
        assert kv_key(*parts) == old  # from the cache this time


def test_bound_log_context_is_restored_after_the_block(capsys: pytest.CaptureFixture[str]) -> None:
    """A nested binding shadows the outer one inside its block only; nothing leaks after."""
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(),
    )
    log = structlog.get_logger()
    try:
        with bound(subject="s"):
            with bound(injury_id="outer"):
                with bound(injury_id="inner"):
                    log.info("a")
                log.info("b")
            log.info("c")
        log.info("d")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d.get("subject"), d.get("injury_id")) for d in lines] == [
        ("s", "inner"),
        ("s", "outer"),
        ("s", None),
        (None, None),
    ]
