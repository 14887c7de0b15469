"""Oversized dead letters and events are truncated to the server's max_payload, never dropped,
and the connection survives them (a real nats-server, default and small limits)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from auto_healer.bloodstream import (
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT,
    Publisher,
    connect,
    ensure_streams,
)
from auto_healer.contracts import DomainEvent, event_subject, parse_injury
from auto_healer.embedded import NatsServer
from auto_healer.fit import budget, fit_dead_letter, fit_event, header_size, safe_header_value
from auto_healer.metrics import Metrics
from auto_healer.outcomes import Kind, Outcome
from auto_healer.report import outcome_dict
from auto_healer.settings import load_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SMALL_MAX_PAYLOAD, injury

SMALL = SMALL_MAX_PAYLOAD  # the small_server fixture's limit
MIB = 1024 * 1024
# Every code point, lone surrogates (category Cs) and control characters included.
ANY_CHAR = st.characters(categories=["L", "M", "N", "P", "S", "Z", "C"])


async def open_publisher(url: str) -> tuple[Any, Any, Publisher]:
    """A connection made as the agent makes it, its JetStream (streams set up), a Publisher."""
    nc = await connect(load_settings().nats, url, name="fit-test")
    js = nc.jetstream()
    await ensure_streams(js, max_deliver=3, ack_wait_s=30.0)
    return nc, js, Publisher(nc, Metrics())


async def assert_usable(nc: Any, js: Any, publisher: Publisher) -> None:
    """The connection is open and still carries a dead letter end to end."""
    assert nc.is_connected and not nc.is_closed, nc.last_error
    sub = await nc.subscribe(DEAD_LETTER_SUBJECT)
    assert await publisher.publish_dead_letter(DEAD_LETTER_SUBJECT, b"ping", {"A": "b"}, js=js)
    msg = await sub.next_msg(timeout=5)
    assert msg.data == b"ping"
    await sub.unsubscribe()


def failed_event(raw: bytes, reason: str) -> dict[str, Any]:
    """The outcome event the agent publishes for a failed injury (as `effects` builds it)."""
    outcome = Outcome(Kind.FAILED, reason, injury=parse_injury(raw), raw=raw)
    metadata = outcome_dict(outcome) | {"repo": "hive"}
    event = DomainEvent(success=False, event_type="heal_failed", timestamp=1.0, metadata=metadata)
    return event.model_dump(exclude_none=True)


async def test_a_dead_letter_just_under_max_payload_is_truncated_and_delivered(
    nats_server: NatsServer,
) -> None:
    """A body of max_payload-10 bytes with long headers arrives cut, with its size and sha256."""
    nc, js, publisher = await open_publisher(nats_server.url)
    try:
        assert nc.max_payload == MIB
        body = bytes(range(256)) * ((MIB - 10) // 256) + b"\xff" * ((MIB - 10) % 256)
        headers = {
            "Auto-Healer-Reason": "not JSON:\r\n" + "é" * 5000,
            "Auto-Healer-Outcome": "rejected",
            "Auto-Healer-Injury-Id": "i" * 3000,
        }
        sub = await nc.subscribe(DEAD_LETTER_SUBJECT)
        assert await publisher.publish(DEAD_LETTER_SUBJECT, body, headers, js=js)
        msg = await sub.next_msg(timeout=10)
        assert msg.headers["Auto-Healer-Truncated"] == "true"
        assert msg.headers["Auto-Healer-Original-Size"] == str(len(body))
        assert msg.headers["Auto-Healer-Original-Sha256"] == hashlib.sha256(body).hexdigest()
        assert body.startswith(msg.data) and len(msg.data) > MIB // 2
        assert msg.headers["Auto-Healer-Reason"].startswith("not JSON: ")
        assert "\r" not in msg.headers["Auto-Healer-Reason"]
        assert len(msg.headers["Auto-Healer-Reason"]) <= 1000
        stored = await js.get_last_msg(DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECT)
        assert stored.data == msg.data
        await assert_usable(nc, js, publisher)
    finally:
        await nc.close()


async def test_an_event_with_a_1_mib_injury_is_delivered_as_valid_truncated_json(
    nats_server: NatsServer,
) -> None:
    """An outcome event embedding a 1 MiB injury arrives as JSON with the injury summarised."""
    nc, js, publisher = await open_publisher(nats_server.url)
    try:
        raw = json.dumps(injury("build/tmp", notes="n" * (MIB - 300))).encode()
        assert MIB - 200 < len(raw) <= MIB
        event = failed_event(raw, "the formatter failed\n" + "x" * 100_000)
        subject = event_subject("heal_failed")
        sub = await nc.subscribe(subject)
        assert await publisher.publish(subject, event)
        msg = await sub.next_msg(timeout=10)
        got = json.loads(msg.data)
        assert got.keys() == event.keys()
        assert got["metadata"]["injury_id"] == event["metadata"]["injury_id"]
        summary = got["metadata"]["injury"]
        canonical = json.dumps(event["metadata"]["injury"], separators=(",", ":")).encode()
        assert summary["truncated"] is True
        assert summary["original_size"] == len(canonical)
        assert summary["sha256"] == hashlib.sha256(canonical).hexdigest()
        assert canonical.decode().startswith(summary["prefix"]) and summary["prefix"]
        assert got["metadata"]["reason"].startswith("the formatter failed\n")
        await assert_usable(nc, js, publisher)
    finally:
        await nc.close()


def test_property_every_dead_letter_and_event_fits_and_arrives(small_server: NatsServer) -> None:
    """Random body sizes up to max_payload and random header text (unicode, lone surrogates,
    CR/LF): every dead letter and event arrives, and the connection stays open."""
    loop = asyncio.new_event_loop()
    nc, js, publisher = loop.run_until_complete(open_publisher(small_server.url))
    dead = loop.run_until_complete(nc.subscribe(DEAD_LETTER_SUBJECT))
    events = loop.run_until_complete(nc.subscribe(event_subject("heal_failed")))

    async def one(body: bytes, reason: str, injury_id: str) -> None:
        headers = {"Auto-Healer-Reason": reason, "Auto-Healer-Injury-Id": injury_id}
        assert await publisher.publish_dead_letter(DEAD_LETTER_SUBJECT, body, headers, js=js)
        msg = await dead.next_msg(timeout=5)
        assert body.startswith(msg.data)
        if msg.data != body:
            assert msg.headers["Auto-Healer-Original-Size"] == str(len(body))
            assert msg.headers["Auto-Healer-Original-Sha256"] == hashlib.sha256(body).hexdigest()
        raw = json.dumps(injury("p", notes=injury_id, blob=body.hex())).encode()
        doc = failed_event(raw, reason)
        assert await publisher.publish_event(event_subject("heal_failed"), doc)
        got = json.loads((await events.next_msg(timeout=5)).data)
        assert got.keys() == doc.keys()
        assert nc.is_connected and not nc.is_closed, nc.last_error

    @given(
        size=st.integers(0, SMALL) | st.integers(SMALL - 700, SMALL),  # often near the limit
        fill=st.binary(min_size=1, max_size=8),
        reason=st.text(ANY_CHAR, max_size=40) | st.text(ANY_CHAR, min_size=500, max_size=2000),
        injury_id=st.text(st.characters(codec="utf-8"), max_size=500),
    )
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(size: int, fill: bytes, reason: str, injury_id: str) -> None:
        body = (fill * (size // len(fill) + 1))[:size]
        loop.run_until_complete(one(body, reason + "\ud800", injury_id))

    try:
        assert nc.max_payload == SMALL
        check()
        loop.run_until_complete(assert_usable(nc, js, publisher))
    finally:
        loop.run_until_complete(nc.close())
        loop.close()


def test_fit_dead_letter_keeps_what_fits_and_sanitises_headers() -> None:
    """A body that fits is kept whole; header values lose control characters and surrogates."""
    body, headers = fit_dead_letter(b"abc", {"Auto-Healer-Reason": " a\r\nb\x00\ud800 "}, MIB)
    assert body == b"abc"
    assert headers == {"Auto-Healer-Reason": "a  b \ufffd"}
    assert safe_header_value("r" * 5000) == "r" * 997 + "..."


def test_fit_dead_letter_on_a_small_server_leaves_half_the_room_to_the_body() -> None:
    """Headers too long for a small limit are cut further, so the body keeps half the room."""
    body, headers = fit_dead_letter(b"x" * SMALL, {"A": "é" * 1000, "B": "b" * 1000}, SMALL)
    assert header_size(headers) <= budget(SMALL) // 2
    assert header_size(headers) + len(body) == budget(SMALL)
    assert headers["Auto-Healer-Original-Size"] == str(SMALL)


def test_fit_event_keeps_top_level_keys_even_at_a_tiny_limit() -> None:
    """With too little room for any metadata, metadata itself is summarised; keys all stay."""
    metadata = {f"key{i}": "v" * 90 for i in range(100)}
    doc = {"success": False, "event_type": "e", "timestamp": 1.0, "metadata": metadata}
    data = fit_event(doc, 1024)
    got = json.loads(data)
    assert len(data) <= budget(1024) and got.keys() == doc.keys()
    assert got["metadata"]["truncated"] is True
    assert fit_event(doc, MIB) == json.dumps(doc, separators=(",", ":")).encode()


def test_fit_event_escapes_lone_surrogates_as_valid_json() -> None:
    """A lone surrogate in any string serialises (escaped) and parses back."""
    doc = {"metadata": {"reason": "bad \ud800 \udfff"}}
    assert json.loads(fit_event(doc, MIB)) == doc


def test_fit_event_cuts_a_circular_or_absurdly_deep_part() -> None:
    """A part JSON cannot hold (circular, too deep) is summarised; the event still serialises."""
    loop: list[Any] = []
    loop.append(loop)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for part in (loop, deep):
        got = json.loads(fit_event({"event_type": "e", "metadata": {"steps": part}}, MIB))
        assert got["event_type"] == "e" and got["metadata"]["steps"]
