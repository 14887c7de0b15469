"""The console's API and its refusals over plain HTTP, against a running agent on a real
nats-server and a real bare remote (one agent for the module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from auto_healer.console.security import Guardian, Refused, Token, load_token
from auto_healer.errors import ConfigError
from auto_healer.settings import load_settings

from tests.conftest import injury
from tests.console_support import HELD, SECRET, TOKEN_NAME, ConsoleAgent, outcome, start, wait

pytestmark = pytest.mark.timeout(120)
BEARER = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleAgent]:
    yield from start(tmp_path_factory.mktemp("console-http"))


def sign_in(c: ConsoleAgent) -> tuple[httpx.Client, str]:
    """A client signed in through the login form, and its CSRF token (read from a page)."""
    client = httpx.Client(base_url=c.base, timeout=20)
    r = client.post("/ui/login", data={"token": SECRET}, headers={"Origin": c.base})
    assert r.status_code == 303, r.text
    page = client.get("/ui/fleet").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return client, csrf


def test_api_reads_the_history_the_replicas_and_the_controls(console: ConsoleAgent) -> None:
    """A healed injury is in /api/history with its commit; the replica is heard from; the
    pause, breakers, approvals and dead letters answer."""
    console.publish(injury("core/src/healme/"))
    healed = wait(lambda: outcome(console, "healed", "core/src/healme/*"), "the heal in history")
    meta = healed[0]["metadata"]
    assert meta["commit"] and meta["injury"]["affected_path"] == "core/src/healme/"
    story = console.api(f"injury/{meta['injury_id']}")["story"]
    assert [e["event_type"] for e in story] == ["injury_healed"]
    replicas = wait(lambda: console.api("replicas"), "a heartbeat")
    assert replicas[0]["status"] == "active" and replicas[0]["meta"]["replica"]
    assert console.api("pause") == {"paused": False}
    assert any(b["repo"] == meta["repo"] and b["count"] >= 1 for b in console.api("breakers"))
    assert console.api("approvals") == []
    assert isinstance(console.api("dead-letters"), list)
    chart = console.api("chart")
    assert len(chart) == 24 and chart[-1]["healed"] >= 1


def test_api_writes_need_the_token_and_are_recorded_with_its_name(console: ConsoleAgent) -> None:
    """No token: 401; a wrong one: 403; the right one pauses, and the history says alice did,
    through the console; resume likewise."""
    h = console.http
    assert h.post("/api/pause").status_code == 401
    assert h.post("/api/pause", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert console.api("pause") == {"paused": False}
    r = h.post("/api/pause", json={"reason": "maintenance"}, headers=BEARER)
    assert r.status_code == 200 and r.json()["by"] == TOKEN_NAME, r.text
    wait(lambda: console.api("pause")["paused"], "the pause in the mirror")
    assert console.api("pause")["paused_by"] == TOKEN_NAME
    assert h.post("/api/resume", headers=BEARER).status_code == 200
    wait(lambda: not console.api("pause")["paused"], "the resume in the mirror")
    controls = wait(
        lambda: [e["metadata"] for e in console.api("history", kind="control")],
        "the two controls in the history",
        lambda found: len(found) >= 2,
    )
    assert [(m["control"], m["by"], m["via"]) for m in controls] == [  # newest first
        ("resume", TOKEN_NAME, "console"),
        ("pause", TOKEN_NAME, "console"),
    ]


def test_a_decision_on_nothing_and_a_replay_of_nothing_are_refused(console: ConsoleAgent) -> None:
    """Approving an injury no one holds, or replaying a dead letter that is not there: 409."""
    r = console.http.post("/api/approve", data={"injury_id": "nope"}, headers=BEARER)
    assert r.status_code == 409 and "no injury 'nope' awaits approval" in r.json()["error"]
    r = console.http.post("/api/replay", data={"seq": "99999"}, headers=BEARER)
    assert r.status_code == 409 and "no dead letter 99999" in r.json()["error"]
    assert console.http.post("/api/replay", data={}, headers=BEARER).status_code == 400


def test_a_decision_names_the_request_it_was_taken_on(console: ConsoleAgent) -> None:
    """A decision carrying another request's fingerprint (a stale page) is refused and the
    request stays pending; with the fingerprint /api/approvals gives, it is decided."""
    console.publish(injury("core/src/guarded/", severity=HELD))
    [held] = wait(
        lambda: [r for r in console.api("approvals") if r["state"] == "pending"],
        "the held request",
    )
    stale = {"injury_id": held["injury_id"], "request": "0" * 16}
    r = console.http.post("/api/approve", data=stale, headers=BEARER)
    assert r.status_code == 409 and "held again with another plan" in r.json()["error"], r.text
    assert [q["state"] for q in console.api("approvals")] == ["pending"]
    seen = {"injury_id": held["injury_id"], "request": held["request"]}
    r = console.http.post("/api/reject", data=seen, headers=BEARER)
    assert r.status_code == 200, r.text
    wait(
        lambda: [q["state"] for q in console.api("approvals")],
        "the rejection in the mirror",
        lambda states: "pending" not in states,
    )


def test_forms_need_a_session_a_csrf_token_and_the_same_origin(console: ConsoleAgent) -> None:
    """A form post without a session is 401; with a bad CSRF token or from another origin,
    403; a wrong token cannot sign in; none of it pauses anything."""
    form = {"back": "/ui/fleet", "reason": "x"}
    anon = console.http.post("/ui/act/pause", data=form, headers={"Origin": console.base})
    assert anon.status_code == 401 and "sign in" in anon.text
    bad = console.http.post("/ui/login", data={"token": "wrong"}, headers={"Origin": console.base})
    assert bad.status_code == 403 and "set-cookie" not in bad.headers
    client, csrf = sign_in(console)
    try:
        forged = client.post(
            "/ui/act/pause", data={**form, "csrf": "forged"}, headers={"Origin": console.base}
        )
        assert forged.status_code == 403 and "CSRF" in forged.text
        cross = client.post(
            "/ui/act/pause", data={**form, "csrf": csrf}, headers={"Origin": "http://evil.test"}
        )
        assert cross.status_code == 403 and "cross-origin" in cross.text
        bare = client.post("/ui/act/pause", data={**form, "csrf": csrf})  # no Origin, no Referer
        assert bare.status_code == 403
        assert console.api("pause") == {"paused": False}
        page = client.get("/ui/fleet").text
        assert SECRET not in page and f'signed in as <b id="who">{TOKEN_NAME}</b>' in page
    finally:
        client.close()


def test_pages_carry_the_security_headers_and_escape_payload_text(console: ConsoleAgent) -> None:
    """Every page has a CSP without inline script, no framing, no caching; the API is no-store;
    a payload's markup is shown as text, never as markup."""
    console.publish(injury("core/src/<img src=x onerror=alert(1)>/"))
    wait(lambda: console.api("history", path="*onerror*"), "the hostile injury's outcome")
    for path in ("/ui/outcomes", "/ui/fleet", "/ui/approvals", "/ui/dead-letters", "/api/pause"):
        r = console.http.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
    page = console.http.get("/ui/outcomes").text
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    js = console.http.get("/ui/static/htmx.min.js")
    assert js.status_code == 200 and js.text.startswith("/*! htmx 2.")


def test_the_token_is_read_from_its_file_and_a_short_one_is_refused(tmp_path: Path) -> None:
    """CONSOLE_TOKEN_FILE gives the token (name:secret); a short secret is a config error; no
    token at all is read-only, and a read-only console refuses every write."""
    f = tmp_path / "token"
    f.write_text(f"bob:{SECRET}\n")
    token = load_token(load_settings(console_token_file=f).console_settings)
    assert token == Token("bob", SECRET) and SECRET not in repr(token)
    unnamed = load_token(load_settings(console_token=SECRET).console_settings)
    assert unnamed is not None and unnamed.name == "console"
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(load_settings(console_token="x:short").console_settings)
    assert load_token(load_settings().console_settings) is None
    guardian = Guardian(None)
    with pytest.raises(Refused, match="read-only"):
        guardian.api_writer(f"Bearer {SECRET}", None, "h")
    with pytest.raises(Refused, match="read-only"):
        guardian.sign_in(SECRET)
