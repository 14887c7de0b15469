"""The console under attack: hostile publishers, hostile requests, a frozen NATS, against a
running agent on a real nats-server and a real bare remote (one agent for the module; the last
test freezes its nats-server, so it must stay last)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from auto_healer.console.backend import MAX_REPLICAS
from auto_healer.console.security import Guardian, load_hosts
from auto_healer.contracts import SUBJECT_HEARTBEAT
from auto_healer.settings import load_settings

from tests.console_support import SECRET, ConsoleAgent, start, wait

pytestmark = pytest.mark.timeout(120)
BEARER = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleAgent]:
    yield from start(tmp_path_factory.mktemp("console-attack"))


def sign_in(c: ConsoleAgent) -> tuple[httpx.Client, str]:
    """A client signed in through the login form, and its CSRF token (read from a page)."""
    client = httpx.Client(base_url=c.base, timeout=30)
    r = client.post("/ui/login", data={"token": SECRET}, headers={"Origin": c.base})
    assert r.status_code == 303, r.text
    page = client.get("/ui/login").text
    return client, page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def heartbeat(replica: str, timestamp: str) -> bytes:
    """An auto-healer heartbeat as JSON text, its timestamp written as given."""
    head = json.dumps({"service": "auto-healer", "status": "active"})[:-1]
    return f'{head}, "timestamp": {timestamp}, "metadata": {{"replica": "{replica}"}}}}'.encode()


def beat(url: str, *bodies: bytes) -> None:
    """Publish raw heartbeats on the Hive's heartbeat subject (plain NATS, in order)."""

    async def send() -> None:
        nc = await nats.connect(url)
        for body in bodies:
            await nc.publish(SUBJECT_HEARTBEAT, body)
        await nc.drain()

    asyncio.run(send())


def test_a_heartbeat_whose_timestamp_is_no_time_leaves_the_fleet_page_up(
    console: ConsoleAgent,
) -> None:
    """Heartbeats dated NaN, Infinity or 1e300 (JSON allows the first two in Python) are not
    replicas, nor is another Hive service beating on the same subject: the fleet page, where
    Pause is, still answers and lists the real replica."""
    real = wait(lambda: console.api("replicas"), "the agent's own heartbeat")[0]["name"]
    times = ["NaN", "Infinity", "-Infinity", "1e300"]
    bogus = [heartbeat(f"bogus-{i}", t) for i, t in enumerate(times)]
    last = heartbeat("after", repr(time.time()))
    other = b'{"service":"bee-keeper","status":"active","timestamp":%f}' % time.time()
    beat(console.url, other, *bogus, last)
    names = wait(
        lambda: [r["name"] for r in console.api("replicas")],
        "the heartbeat published after the bogus ones",
        lambda found: "after" in found,
    )
    assert not [n for n in names if n.startswith("bogus")] and "bee-keeper" not in names
    page = console.http.get("/ui/fleet")
    assert page.status_code == 200, page.text
    assert real in page.text and "Pause every replica" in page.text
    assert "NaN" not in console.http.get("/api/replicas").text  # not even as invalid JSON


def test_a_flood_of_replica_names_is_bounded(console: ConsoleAgent) -> None:
    """Heartbeats under 3000 made-up replica names keep at most MAX_REPLICAS of them (the
    newest heard), so neither the agent's memory nor the fleet page grows without end."""
    now = time.time()
    flood = [heartbeat(f"flood-{i}", repr(now)) for i in range(3000)]
    beat(console.url, *flood)
    names = wait(
        lambda: [r["name"] for r in console.api("replicas")],
        "the last heartbeat of the flood",
        lambda found: "flood-2999" in found,
    )
    assert len(names) <= MAX_REPLICAS, len(names)
    page = console.http.get("/ui/fleet")
    assert page.status_code == 200 and page.text.count("flood-") <= MAX_REPLICAS


def test_a_pause_reason_typed_in_latin_1_leaves_the_pages_up(console: ConsoleAgent) -> None:
    """`auto-healer pause --reason caf\\xe9` typed on a Latin-1 terminal reaches Python as a lone
    surrogate (`\\udce9`); the outcomes page that lists it and the fleet page that shows it
    still render (for the 24 h it stays listed)."""
    cli = Path(sys.executable).with_name("auto-healer")
    argv = [cli, "pause", "--nats-url", console.url, "--reason", "caf\xe9 latin-1"]
    raw = [os.fsencode(a) if isinstance(a, Path) else a.encode("latin-1") for a in argv]
    done = subprocess.run(raw, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    try:
        wait(lambda: console.api("pause")["paused"], "the pause in the mirror")
        wait(
            lambda: [e for e in console.api("history", kind="control") if "latin" in str(e)],
            "the pause in the history",
        )
        for path in ("/ui/outcomes", "/ui/outcomes/rows", "/ui/fleet"):
            page = console.http.get(path)
            assert page.status_code == 200, (path, page.text)
            assert "latin-1" in page.text, path
    finally:
        assert console.http.post("/api/resume", headers=BEARER).status_code == 200
        wait(lambda: not console.api("pause")["paused"], "the resume in the mirror")


def test_a_token_with_a_lone_surrogate_is_a_wrong_token(console: ConsoleAgent) -> None:
    """Signing in with a JSON token holding a lone surrogate is refused as wrong (403), and a
    form post with such a CSRF token as a bad one, not as an internal error."""
    r = console.http.post(
        "/ui/login",
        content=b'{"token": "\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800"}',
        headers={"Origin": console.base, "Content-Type": "application/json"},
    )
    assert r.status_code == 403 and "wrong token" in r.text, r.text
    assert "set-cookie" not in r.headers
    client, _ = sign_in(console)
    try:
        r = client.post(
            "/ui/act/resume",
            content=b'{"csrf": "\\ud800"}',
            headers={"Origin": console.base, "Content-Type": "application/json"},
        )
    finally:
        client.close()
    assert r.status_code == 403 and "CSRF" in r.text, r.text


def test_a_since_too_far_back_for_a_date_is_a_bad_request(console: ConsoleAgent) -> None:
    """`since=99999999999999d` is a 400 naming the value, on the API and on the page, not an
    internal error."""
    r = console.http.get("/api/history", params={"since": "99999999999999d"})
    assert r.status_code == 400 and "99999999999999d" in r.json()["error"], r.text
    page = console.http.get("/ui/outcomes", params={"since": "99999999999999d"})
    assert page.status_code == 400 and "99999999999999d" in page.text, page.text


def test_a_back_field_with_a_line_break_adds_no_header(console: ConsoleAgent) -> None:
    """The page to come back to after an action is a path of /ui: a `back` with CR LF cannot
    split the response into a second header (a cookie here)."""
    client, csrf = sign_in(console)
    try:
        r = client.post(
            "/ui/act/resume",
            data={"csrf": csrf, "back": "/ui/fleet\r\nSet-Cookie: injected=1"},
            headers={"Origin": console.base},
        )
    finally:
        client.close()
    assert r.status_code == 303, r.text
    assert "injected" not in r.headers.get("set-cookie", "")
    assert r.headers["location"] == "/ui/outcomes"


def test_the_dead_letter_page_shows_only_the_start_of_huge_bodies(console: ConsoleAgent) -> None:
    """Three 300 KB bodies that are not JSON are dead-lettered; the page shows the start of
    each and how much it left out, not a megabyte of text (the API keeps the whole body)."""
    marker = "huge-dead-letter"
    bodies = [f"{{{marker}-{i} ".encode() + b"A" * 300_000 for i in range(3)]
    console.publish(*bodies)
    letters = wait(
        lambda: [d for d in console.api("dead-letters") if marker in d["body"][:40]],
        "the three huge dead letters",
        lambda found: len(found) == 3,
    )
    assert all(len(d["body"]) == len(bodies[0]) for d in letters)
    page = console.http.get("/ui/dead-letters")
    assert page.status_code == 200
    assert all(f"{marker}-{i}" in page.text for i in range(3))
    assert len(page.content) < 100_000, len(page.content)
    assert "more bytes" in page.text


def test_a_host_name_other_than_an_address_or_localhost_reads_nothing(
    console: ConsoleAgent,
) -> None:
    """DNS rebinding: a page of evil.test whose name now resolves to 127.0.0.1 sends
    `Host: evil.test`; the console answers it nothing (421), while 127.0.0.1 and localhost do."""
    port = console.agent.port
    for host in (f"evil.test:{port}", "evil.test", f"127.0.0.1.evil.test:{port}"):
        for path in ("/api/history", "/api/dead-letters", "/ui/outcomes"):
            r = console.http.get(path, headers={"Host": host})
            assert r.status_code == 421, (host, path, r.status_code)
            assert "healme" not in r.text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert console.http.get("/api/pause", headers={"Host": host}).status_code == 200, host
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # HTTP/1.0, no Host
        sock.sendall(b"GET /api/pause HTTP/1.0\r\n\r\n")
        assert sock.makefile("rb").readline().split()[1] == b"200"


def test_the_names_of_console_hosts_are_answered(tmp_path: Path) -> None:
    """CONSOLE_HOSTS (an ingress's name) is answered, in any case, on any port; other names
    and a Host with user info are not."""
    hosts = load_hosts(
        load_settings(console_hosts=" Console.Example.com, ,b.test").console_settings
    )
    guardian = Guardian(None, hosts)
    assert guardian.known_host("console.example.com:443") and guardian.known_host("B.TEST")
    assert not guardian.known_host("example.com") and not guardian.known_host("x@b.test")
    assert not Guardian(None).known_host("console.example.com")


@pytest.mark.slow
def test_a_write_while_nats_is_frozen_says_it_may_still_be_done(console: ConsoleAgent) -> None:
    """With nats-server frozen (SIGSTOP), Pause on the page answers in seconds with a page
    (503, not an internal error) saying the pause may still take effect; reads of the mirror
    still answer; the agent lives on once NATS is back. Slow (~6 s): the KV store's own
    timeout is what is under test."""
    assert console.server is not None and console.server.proc is not None
    pid = console.server.proc.pid
    client, csrf = sign_in(console)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert console.http.get("/api/pause").status_code == 200  # the mirror, no NATS
        started = time.monotonic()
        r = client.post(
            "/ui/act/pause",
            data={"csrf": csrf, "back": "/ui/fleet", "reason": "frozen"},
            headers={"Origin": console.base},
        )
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
        client.close()
    assert took < 20, took
    assert r.status_code in (503, 504), (r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/html") and "may still" in r.text, r.text
    assert console.http.post("/api/resume", headers=BEARER).status_code == 200
    wait(lambda: not console.api("pause")["paused"], "the resume once NATS is back")
    assert console.agent.proc.poll() is None
