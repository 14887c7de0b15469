"""The pager with hostile input: any string Python holds is stored and sent intact, secrets echoed
by the receiver are never logged nor stored, URLs are shown without credentials, and the
per-problem state stays bounded."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import structlog
from auto_healer.contracts import MSG_ID_HEADER, parse_injury_obj
from auto_healer.decision import PageAction
from auto_healer.errors import ConfigError
from auto_healer.jsonl import append_jsonl, read_jsonl
from auto_healer.logs import configure_logging, public_url, redact_secrets, redact_url
from auto_healer.outbox import Ledger, Outbox, StoredPage
from auto_healer.outcomes import Kind, Outcome
from auto_healer.pager import Pager, PageResult, dedup_key
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import injury
from tests.pager_receiver import Answer, Receiver
from tests.test_pager import KEY, outcome, settings_for
from tests.test_pager_outbox import eventually

ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()))  # lone surrogates included
LONE = "caf\udc80 \ud800"  # legal JSON ("\udc80"), not encodable as UTF-8
PASSWORD = "pa55-w0rd-in-the-url"
QUERY_TOKEN = "qu3ry-t0ken-in-the-url"


def files_text(root: Path) -> str:
    """Every file under `root`, decoded as strict UTF-8 (a state file must be valid UTF-8)."""
    return "\n".join(p.read_bytes().decode() for p in sorted(root.rglob("*")) if p.is_file())


@settings(max_examples=100, deadline=None)
@given(text=ANY_TEXT)
@example(text="\udc80")
@example(text="line\u2028sep\x85next\x1crecord")  # str.splitlines() breaks on these
def test_state_files_keep_any_string(text: str) -> None:
    """Outbox, ledger and raw JSON Lines files store any Python string and read it back equal."""
    with tempfile.TemporaryDirectory() as tmp:
        doc = {"k" + text: text, "list": [text, {"n": text}]}
        raw = Path(tmp) / "raw.jsonl"
        append_jsonl(raw, [doc, doc])
        assert list(read_jsonl(raw)) == [doc, doc]
        page = StoredPage(
            injury_id="id" + text, action="trigger", dedup_key="key" + text, at=1.0, body=doc
        )
        Outbox(Path(tmp) / "outbox.jsonl").add(page)
        assert Outbox(Path(tmp) / "outbox.jsonl").pending() == [page]
        Ledger(Path(tmp) / "sent.jsonl").record(page, "sent")
        assert list(Ledger(Path(tmp) / "sent.jsonl").records) == [page.ident]
        files_text(Path(tmp))


def surrogate_outcome() -> Outcome:
    """An escalation whose injury carries lone surrogates in free-form values and a nested key."""
    payload = injury("core/src/x/", auto_heal=False, note=LONE, extra={"k" + LONE: [LONE]})
    parsed = parse_injury_obj(payload, {MSG_ID_HEADER: "surrogate-1"})  # no id without the header
    return Outcome(Kind.ESCALATED, "auto_heal is false: " + LONE, injury=parsed, playbook="p")


async def test_a_surrogate_page_is_queued_kept_over_a_restart_and_sent_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Pager down (500): a page with lone surrogates is queued, survives a restart, sent once."""
    settings = settings_for(receiver.url, tmp_path, pager_attempts=1, pager_drain_interval_s=60)
    o = surrogate_outcome()
    receiver.script(Answer(500))
    first = Pager(settings, dry_run=False)
    await first.start()
    try:
        assert await first.notify(o, PageAction.TRIGGER) == PageResult.QUEUED
    finally:
        await first.aclose()
    second = Pager(settings, dry_run=False)
    assert second.pending == 1
    await second.start()
    try:
        await eventually(lambda: second.pending == 0)
        assert await second.notify(o, PageAction.TRIGGER) == PageResult.DUPLICATE
    finally:
        await second.aclose()
    assert [r.status for r in receiver.requests] == [500, 202]
    receiver.requests[-1].raw.decode()  # the wire body is valid UTF-8
    [body] = receiver.delivered
    assert o.injury is not None
    assert body["payload"]["custom_details"]["injury"] == o.injury.raw
    assert body["payload"]["custom_details"]["reason"] == o.reason
    assert LONE in body["payload"]["summary"]
    files_text(tmp_path / "pager")


def test_a_long_dedup_key_with_a_lone_surrogate_is_hashed() -> None:
    """A key over 255 characters is hashed even when it holds a lone surrogate."""
    key = dedup_key("t", "a/b", "https://git.example/" + LONE * 100)
    assert len(key) <= 255
    assert key != dedup_key("t", "a/b", "https://git.example/" + LONE * 99 + "x")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_log_line_with_any_string_never_raises(
    fmt: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log line with lone surrogates, on a strict UTF-8 stderr, is written, not raised."""
    saved = structlog.get_config()
    try:
        configure_logging(fmt)
        structlog.get_logger("test").warning("odd_input", path=LONE, **{"k" + LONE: 1})
        err = capsys.readouterr().err
    finally:
        structlog.configure(**saved)
    assert "odd_input" in err
    assert "\\udc80" in err


@pytest.mark.parametrize("status", [400, 500])
async def test_secrets_echoed_by_the_receiver_are_neither_logged_nor_stored(
    receiver: Receiver, tmp_path: Path, status: int
) -> None:
    """A receiver echoing the request (key, URL token, Basic auth): no secret in logs or files."""
    url = f"http://bot:{PASSWORD}@127.0.0.1:{receiver.port}/v2/enqueue?token={QUERY_TOKEN}"
    p = Pager(settings_for(url, tmp_path, pager_attempts=1), dry_run=False)
    receiver.script(Answer(status, echo=True))
    with structlog.testing.capture_logs() as logs:
        await p.start()
        try:
            result = await p.notify(outcome(), PageAction.TRIGGER)
            await eventually(lambda: p.pending == 0)
        finally:
            await p.aclose()
    assert result == (PageResult.DEAD_LETTERED if status == 400 else PageResult.QUEUED)
    answered = [e for e in logs if e.get("status") == status]
    assert answered
    assert all("event_action" in e["response"] for e in answered)  # the echo is shown, redacted
    basic = base64.b64encode(f"bot:{PASSWORD}".encode()).decode()
    shown = repr(logs) + files_text(tmp_path / "pager")
    for secret in (KEY, PASSWORD, QUERY_TOKEN, basic):
        assert secret not in shown


def test_redact_secrets_removes_known_values_and_secret_shapes() -> None:
    """Known values (also JSON- or URL-escaped) and token/password/auth shapes are redacted."""
    text = (
        f'{{"routing_key": "other-key", "x": "{KEY}"}} token=abc123&password=hunter2 '
        "Authorization: Bearer eyJhbGciOi\r\nhttps://u:pw@h.example/x api_key: zz9 "
        'secret="s p a c e"'
    )
    out = redact_secrets(text, [KEY, ""])
    for secret in (KEY, "other-key", "abc123", "hunter2", "eyJhbGciOi", "u:pw", "zz9", "s p a"):
        assert secret not in out
    assert "https://**********@h.example/x" in out
    assert redact_secrets('a"b', ['a"b']) == "**********"
    assert redact_secrets('{"v": "a\\"b"}', ['a"b']) == '{"v": "**********"}'


def test_one_url_redactor_with_its_variants() -> None:
    """Credentials go (even with '@' in the password); `public_url` keeps scheme and host only."""
    assert redact_url("https://u:p@ss@git.example/h.git") == "https://git.example/h.git"
    assert redact_url("nats://a:b@h1:4222,nats://c@h2:4222") == "nats://h1:4222,nats://h2:4222"
    assert public_url("https://u:p@[::1]:8443/v2/x?token=t") == "https://[::1]:8443"


def test_a_token_as_url_username_is_never_shown(tmp_path: Path) -> None:
    """A token in the webhook URL's user part is hidden in the plan, the destination, errors."""
    token = "ghp_T0KENinTHEuserPART"
    p = Pager(settings_for(f"http://{token}@127.0.0.1:9/x?k=v", tmp_path), dry_run=True)
    asyncio.run(p.notify(outcome(), PageAction.TRIGGER))
    shown = json.dumps(p.planned_requests()) + p.destination
    assert token not in shown
    assert "127.0.0.1:9/x?k=**********" in shown
    with pytest.raises(ConfigError) as bad:
        Pager(settings_for(f"ftp://{token}@127.0.0.1:9/x", tmp_path), dry_run=False)
    assert token not in str(bad.value)


async def test_closed_problems_are_forgotten_open_ones_kept(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Resolved problems older than window and repeat interval are pruned; open ones stay."""
    s = settings_for(receiver.url, tmp_path, pager_group_window_s=0.1, pager_repeat_interval_s=0.2)
    p = Pager(s, dry_run=False)
    await p.start()
    try:
        for i in range(50):
            o = outcome(path=f"core/src/d{i}/", timestamp=1.0 + i)
            await p.notify(o, PageAction.TRIGGER)
            healed = outcome(Kind.HEALED, "pushed", path=f"core/src/d{i}/")
            await p.notify(healed, PageAction.RESOLVE)
        assert await p.notify(outcome(path="core/src/open/"), PageAction.TRIGGER) == "sent"
        await asyncio.sleep(0.3)
        assert await p.notify(outcome(path="core/src/new/"), PageAction.TRIGGER) == "sent"
        assert p.tracked_problems == 2  # the open one and the new one
        again = outcome(path="core/src/open/", timestamp=9.0)
        assert await p.notify(again, PageAction.TRIGGER) == "sent"  # repeat interval is over
        soon = outcome(path="core/src/open/", timestamp=10.0)
        assert await p.notify(soon, PageAction.TRIGGER) == "grouped"  # still grouped: kept
    finally:
        await p.aclose()
