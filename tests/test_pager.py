"""The pager against a real HTTP receiver on loopback: formats, dedup, resolve, retry, storms."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from auto_healer.contracts import parse_injury_obj
from auto_healer.decision import Context, PageAction, decide
from auto_healer.errors import ConfigError
from auto_healer.outcomes import Kind, Outcome
from auto_healer.pager import Pager, PageResult, dedup_key
from auto_healer.settings import PagerSettings, load_settings

from tests.conftest import injury
from tests.pager_receiver import Answer, Receiver

KEY = "R0UTING-KEY-0123456789abcdef"


def settings_for(url: str, tmp_path: Path, **overrides: Any) -> PagerSettings:
    """Pager settings with short timeouts, waits and windows so the tests stay fast."""
    values: dict[str, Any] = {
        "pager_webhook_url": url,
        "pager_routing_key": KEY,
        "pager_attempts": 3,
        "pager_backoff_s": 0.01,
        "pager_max_backoff_s": 0.2,
        "pager_timeout_s": 0.5,
        "pager_drain_interval_s": 0.05,
        "pager_outbox_path": tmp_path / "pager" / "outbox.jsonl",
    }
    return load_settings(**{**values, **overrides}).pager


@pytest.fixture
async def pager(receiver: Receiver, tmp_path: Path) -> AsyncIterator[Pager]:
    """A started pager aimed at the receiver."""
    p = Pager(settings_for(receiver.url, tmp_path), dry_run=False)
    await p.start()
    yield p
    await p.aclose()


def outcome(
    kind: Kind = Kind.ESCALATED,
    reason: str = "auto_heal is false: a human must decide",
    path: str = "core/src/random_stuff/",
    **fields: Any,
) -> Outcome:
    """An outcome for one valid injury (`fields` go into the injury payload)."""
    parsed = parse_injury_obj(injury(path, **fields))
    return Outcome(kind, reason, injury=parsed, playbook="unauthorized_directory")


async def test_trigger_has_every_pagerduty_v2_field(pager: Pager, receiver: Receiver) -> None:
    """An escalation becomes one Events v2 trigger with every field, severity high→error."""
    o = outcome(auto_heal=False)
    assert await pager.notify(o, PageAction.TRIGGER, repo="https://git.example/hive.git") == "sent"
    [req] = receiver.requests
    assert (req.method, req.path) == ("POST", "/v2/enqueue")
    assert req.headers["Content-Type"] == "application/json"
    body = req.json
    assert set(body) == {"routing_key", "event_action", "dedup_key", "payload", "links"}
    assert body["routing_key"] == KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == (
        "auto-healer:https://git.example/hive.git:unauthorized_directory:core/src/random_stuff"
    )
    p = body["payload"]
    assert p["summary"] == (
        "auto-healer escalated: unauthorized_directory at "
        "core/src/random_stuff/ (high): auto_heal is false: a human must decide"
    )
    assert p["source"] == "auto-healer"
    assert p["severity"] == "error"
    assert p["timestamp"] == "2025-01-03T16:00:00.456+00:00"
    assert p["component"] == "core/src/random_stuff/"
    assert p["group"] == "https://git.example/hive.git"
    assert p["class"] == "unauthorized_directory"
    details = p["custom_details"]
    assert details["injury_id"] == o.injury_id
    assert details["reason"] == "auto_heal is false: a human must decide"
    assert details["outcome"] == "escalated"
    assert details["injury"] == o.injury.raw if o.injury else None
    assert body["links"] == [{"href": "https://git.example/hive.git", "text": "repository"}]


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info")],
)
async def test_severity_is_mapped(
    pager: Pager, receiver: Receiver, severity: str, expected: str
) -> None:
    """The injury's severity maps to PagerDuty's: critical, error, warning, info."""
    await pager.notify(outcome(severity=severity), PageAction.TRIGGER)
    assert receiver.requests[0].json["payload"]["severity"] == expected


async def test_summary_is_capped_at_1024_chars(pager: Pager, receiver: Receiver) -> None:
    """A long reason is cut so the summary stays within PagerDuty's 1024 characters."""
    await pager.notify(outcome(reason="x" * 5000), PageAction.TRIGGER)
    summary = receiver.requests[0].json["payload"]["summary"]
    assert len(summary) == 1024
    assert summary.endswith("…")


async def test_later_heal_resolves_the_same_incident(pager: Pager, receiver: Receiver) -> None:
    """A trigger and a later healed injury with the same key share one dedup_key; resolve."""
    await pager.notify(outcome(auto_heal=False), PageAction.TRIGGER)
    healed = outcome(Kind.HEALED, "pushed abc to main", timestamp=1735920099.0)
    assert decide(healed, Context(pager=True)).page is PageAction.RESOLVE
    assert await pager.notify(healed, PageAction.RESOLVE) == "sent"
    trigger, resolve = (r.json for r in receiver.requests)
    assert resolve == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    # nothing open any more: a second heal of the same problem sends nothing
    again = outcome(Kind.HEALED, "pushed def to main", timestamp=1735920199.0)
    assert await pager.notify(again, PageAction.RESOLVE) == "grouped"
    assert len(receiver.requests) == 2


async def test_same_injury_id_is_never_sent_twice(pager: Pager, receiver: Receiver) -> None:
    """A redelivered injury (same id, same action) is a duplicate, not a second page."""
    o = outcome()
    assert await pager.notify(o, PageAction.TRIGGER) == "sent"
    assert await pager.notify(o, PageAction.TRIGGER) == "duplicate"
    assert len(receiver.requests) == 1


async def test_none_action_and_unparseable_payloads_page_nothing(
    pager: Pager, receiver: Receiver
) -> None:
    """PageAction.NONE and a rejected payload without an injury are never paged."""
    assert await pager.notify(outcome(Kind.SKIPPED, "healthy"), PageAction.NONE) == "none"
    rejected = Outcome(Kind.REJECTED, "payload is not valid JSON", raw=b"{")
    assert decide(rejected, Context(pager=True)).page is PageAction.NONE
    assert await pager.notify(rejected, PageAction.TRIGGER) == "none"
    assert receiver.requests == []


async def test_a_storm_of_1000_identical_injuries_pages_once(
    pager: Pager, receiver: Receiver
) -> None:
    """1,000 identical injuries (distinct ids, one key) within a second produce one page."""
    storm = [outcome(timestamp=1735920000.0 + i / 1000) for i in range(1000)]
    started = time.monotonic()
    results = await asyncio.gather(*(pager.notify(o, PageAction.TRIGGER) for o in storm))
    assert time.monotonic() - started < 1.0
    assert results.count(PageResult.SENT) == 1
    assert results.count(PageResult.GROUPED) == 999
    assert len(receiver.requests) == 1


async def test_repeat_after_interval_carries_the_grouped_count(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Within window and repeat interval triggers are grouped; after both, one reminder page."""
    p = Pager(
        settings_for(receiver.url, tmp_path, pager_group_window_s=0.2, pager_repeat_interval_s=0.4),
        dry_run=False,
    )
    await p.start()
    try:
        assert await p.notify(outcome(timestamp=1.0), PageAction.TRIGGER) == "sent"
        assert await p.notify(outcome(timestamp=2.0), PageAction.TRIGGER) == "grouped"
        await asyncio.sleep(0.25)  # past the window, not the repeat interval
        assert await p.notify(outcome(timestamp=3.0), PageAction.TRIGGER) == "grouped"
        await asyncio.sleep(0.2)
        assert await p.notify(outcome(timestamp=4.0), PageAction.TRIGGER) == "sent"
    finally:
        await p.aclose()
    first, reminder = (r.json for r in receiver.requests)
    assert first["dedup_key"] == reminder["dedup_key"]
    assert first["payload"]["custom_details"]["grouped_count"] == 0
    assert reminder["payload"]["custom_details"]["grouped_count"] == 2


async def test_different_problems_are_different_incidents(pager: Pager, receiver: Receiver) -> None:
    """Another path or type is another dedup_key, paged on its own."""
    await pager.notify(outcome(path="core/src/a/"), PageAction.TRIGGER)
    await pager.notify(outcome(path="core/src/b/"), PageAction.TRIGGER)
    await pager.notify(
        outcome(path="core/src/a.py", injury_type="unformatted_code"), PageAction.TRIGGER
    )
    assert len({r.json["dedup_key"] for r in receiver.requests}) == 3


def test_dedup_key_is_stable_and_bounded() -> None:
    """Slashes around the path do not change the key; a huge path is hashed to ≤ 255 chars."""
    assert dedup_key("t", "/a/b/", None) == dedup_key("t", "a/b", None) == "auto-healer:t:a/b"
    long_a, long_b = dedup_key("t", "a" * 4000, "r"), dedup_key("t", "a" * 3999 + "b", "r")
    assert len(long_a) <= 255
    assert long_a != long_b


async def test_500_then_202_is_retried(pager: Pager, receiver: Receiver) -> None:
    """5xx answers are retried; the page arrives once the pager recovers."""
    receiver.script(Answer(500), Answer(503))
    assert await pager.notify(outcome(), PageAction.TRIGGER) == "sent"
    assert [r.status for r in receiver.requests] == [500, 503, 202]


async def test_429_honours_retry_after(pager: Pager, receiver: Receiver) -> None:
    """A 429 is retried after the Retry-After it gives, not sooner."""
    receiver.script(Answer(429, headers={"Retry-After": "0.15"}))
    assert await pager.notify(outcome(), PageAction.TRIGGER) == "sent"
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 202)
    assert second.at - first.at >= 0.15


async def test_slow_pager_times_out_and_is_retried(receiver: Receiver, tmp_path: Path) -> None:
    """A pager slower than the timeout is retried; the retry carries the same dedup_key."""
    receiver.script(Answer(202, delay_s=0.6))
    p = Pager(settings_for(receiver.url, tmp_path, pager_timeout_s=0.2), dry_run=False)
    await p.start()
    try:
        assert await p.notify(outcome(), PageAction.TRIGGER) == "sent"
    finally:
        await p.aclose()
    await asyncio.sleep(0.5)  # let the slow handler record its request
    assert len(receiver.requests) == 2
    assert len({r.json["dedup_key"] for r in receiver.requests}) == 1


async def test_400_is_dead_lettered_with_the_response(
    pager: Pager, receiver: Receiver, tmp_path: Path
) -> None:
    """A 400 is not retried: it is logged with the response body and written to a dead letter."""
    receiver.script(Answer(400, body='{"status":"invalid event","errors":["bad routing key"]}'))
    o = outcome()
    with structlog.testing.capture_logs() as logs:
        assert await pager.notify(o, PageAction.TRIGGER) == "dead_lettered"
    assert [r.status for r in receiver.requests] == [400]
    dead = (tmp_path / "pager" / "dead-letter.jsonl").read_text()
    [letter] = [json.loads(line) for line in dead.splitlines()]
    assert letter["status"] == 400
    assert "bad routing key" in letter["response"]
    assert letter["page"]["injury_id"] == o.injury_id
    assert await pager.notify(o, PageAction.TRIGGER) == "duplicate"
    [refused] = [e for e in logs if e["event"] == "page_refused"]
    assert "bad routing key" in refused["response"]
    assert KEY not in repr(logs)
    assert KEY not in dead


async def test_jetstream_mode_gets_undelivered_and_the_redelivery_pages(
    receiver: Receiver, tmp_path: Path
) -> None:
    """durable=False: a down pager gives `undelivered`, queues nothing; the redelivery pages."""
    p = Pager(settings_for(receiver.url, tmp_path), dry_run=False)
    await p.start()
    try:
        receiver.script(Answer(500), Answer(500), Answer(500))
        o = outcome()
        assert await p.notify(o, PageAction.TRIGGER, durable=False) == "undelivered"
        assert p.pending == 0
        assert await p.notify(o, PageAction.TRIGGER, durable=False) == "sent"
    finally:
        await p.aclose()
    assert [r.status for r in receiver.requests] == [500, 500, 500, 202]


async def test_generic_format_is_one_json_document(receiver: Receiver, tmp_path: Path) -> None:
    """PAGER_FORMAT=generic sends the injury, its id, the reason and the outcome; no key."""
    p = Pager(
        settings_for(receiver.url, tmp_path, pager_format="generic", pager_routing_key=None),
        dry_run=False,
    )
    await p.start()
    try:
        o = outcome(severity="critical")
        assert await p.notify(o, PageAction.TRIGGER) == "sent"
    finally:
        await p.aclose()
    body = receiver.requests[0].json
    assert body["event_action"] == "trigger"
    assert body["injury_id"] == o.injury_id
    assert body["reason"] == o.reason
    assert body["outcome"] == "escalated"
    assert body["severity"] == "critical"
    assert body["injury"]["affected_path"] == "core/src/random_stuff/"
    assert body["dedup_key"] == "auto-healer:unauthorized_directory:core/src/random_stuff"
    assert "routing_key" not in body


async def test_dry_run_sends_nothing_and_redacts_the_key(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A dry-run returns `planned` with the exact request, key redacted, and sends nothing."""
    p = Pager(settings_for(receiver.url + "?token=s3cret", tmp_path), dry_run=True)
    await p.start()
    assert await p.notify(outcome(), PageAction.TRIGGER) == "planned"
    assert await p.notify(outcome(timestamp=5.0), PageAction.TRIGGER) == "grouped"
    await p.aclose()
    [planned] = p.planned_requests()
    assert planned["method"] == "POST"
    assert planned["url"] == receiver.url + "?token=**********"
    assert planned["json"]["routing_key"] == "**********"
    assert planned["json"]["payload"]["severity"] == "error"
    assert KEY not in json.dumps(planned)
    assert "s3cret" not in json.dumps(planned)
    await asyncio.sleep(0.1)
    assert receiver.requests == []
    assert not (tmp_path / "pager").exists()


def test_pager_is_none_without_a_webhook(tmp_path: Path) -> None:
    """No PAGER_WEBHOOK_URL, no pager; a non-http URL or a missing routing key is an error."""
    assert Pager.from_settings(load_settings().pager, dry_run=False) is None
    assert Pager.from_settings(load_settings(pager_webhook_url=" ").pager, dry_run=False) is None
    with pytest.raises(ConfigError, match="PAGER_ROUTING_KEY"):
        Pager.from_settings(
            settings_for("http://127.0.0.1:9/", tmp_path, pager_routing_key=None), dry_run=False
        )
    with pytest.raises(ConfigError, match="http"):
        Pager.from_settings(settings_for("file:///etc/passwd", tmp_path), dry_run=False)


async def test_repo_credentials_never_reach_the_page(pager: Pager, receiver: Receiver) -> None:
    """A repository URL's user:token part is stripped from the dedup_key, group and links."""
    await pager.notify(outcome(), PageAction.TRIGGER, repo="https://bot:t0ken@git.example/h.git")
    raw = receiver.requests[0].raw.decode()
    assert "t0ken" not in raw
    assert receiver.requests[0].json["payload"]["group"] == "https://git.example/h.git"


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    """Retry-After is read as seconds or as an HTTP date; garbage is ignored."""
    from email.utils import formatdate

    from auto_healer.outbox import parse_retry_after

    assert parse_retry_after("7") == 7.0
    in_10_s = parse_retry_after(formatdate(time.time() + 10, usegmt=True))
    assert in_10_s is not None
    assert 8 < in_10_s <= 10
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
