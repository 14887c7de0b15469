"""A hostile tester's findings on the batch intake, push races and operator controls: each test
failed on the code before its fix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from auto_healer.embedded import NatsServer

from tests.conftest import injury
from tests.inprocess import core_agent


async def test_a_core_flood_of_heals_is_held_back_not_queued_without_end(
    repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Core NATS, one slot, a flood of claimed injuries: at most MAX_QUEUED_HEALS wait in the
    agent (the rest stay in the subscription's bounded buffer), and each is still healed once
    (the queue had no bound: 100k queued heals of 100 kB each is ~20 GB)."""
    _remote, work = repo
    nc = await nats.connect(nats_server.url)
    agent, checkout, publisher, _metrics = core_agent(
        nc, work, max_queued_heals=4, grace_period_s=30
    )
    runner = asyncio.create_task(agent.run(install_signals=False))
    count, peak = 40, 0
    try:
        async with asyncio.timeout(30):
            while not agent.subscribed:
                await asyncio.sleep(0.01)
            for i in range(count):
                body = json.dumps(injury(f"core/src/flood{i}/", pad="x" * 2000)).encode()
                await nc.publish("aura.hive.injury", body)
            await nc.flush()
            while len(publisher.events()) < count:
                peak = max(peak, len(agent._waiting))
                await asyncio.sleep(0.001)
    finally:
        agent.stopping.set()
        await runner
        await nc.close()
        checkout.close()
    assert peak <= 4, f"{peak} heals queued in the agent"
    ids = [e["metadata"]["injury_id"] for e in publisher.events()]
    assert len(set(ids)) == count == len(ids)


async def test_a_spent_signed_approval_written_back_does_not_heal_again(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Bucket write access and an old signed approval: the `done` request written back as
    `approved` (its signature intact) is a replay, not a human's decision: the directory a
    teammate put back since is not deleted again (once the healed id is forgotten, after
    HEALED_TTL_S, it was), and the replay is paged as forged."""
    from dataclasses import replace

    from auto_healer import approvals
    from auto_healer.outcomes import Kind

    from tests.agent_support import remote_tree, seed_dirs, wait_until
    from tests.approval_support import Replica, approval_playbooks, parsed
    from tests.conftest import git

    key = b"hive-signing-key"
    remote, work = repo
    seed_dirs(work, ["wanted"])
    books = approval_playbooks(tmp_path)
    async with Replica(tmp_path, "a", nats_server.url, remote, playbooks=books,
                       signing_key=key) as a:  # fmt: skip
        ask = parsed("core/src/wanted/")
        assert (await a.handle(ask)).kind is Kind.HELD
        await approvals.decide_request(a.cells, ask.id, approve=True, by="erin", signing_key=key)
        await a.wait_state(ask.id, "done")
        assert a.announced[0].kind is Kind.HEALED
        a.healer.coordinator._healed.clear()  # a week later: the healed id is forgotten
        git(work, "pull", "-q", "origin", "main")
        seed_dirs(work, ["wanted"])  # a teammate puts it back, on purpose
        found = await approvals.read(a.cells, ask.id)
        assert found is not None
        replayed = replace(found[0], state="approved", owner=None, commit=None, healing_since=None)
        assert await a.cells.swap(approvals.approval_key(ask.id), replayed.dump(), found[1])
        await wait_until(lambda: len(a.announced) >= 2, 15, "the replay answered")
        await asyncio.sleep(0.5)
    assert any("/wanted/" in p for p in remote_tree(remote)), "an approval healed twice"
    assert a.announced[1].kind is Kind.HELD and "forged" in a.announced[1].reason


def test_a_dead_letter_cut_to_fit_is_not_replayed_as_a_fragment(
    tmp_path: Path,
    small_server: NatsServer,
    repo: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused injury whose dead letter was cut to fit max_payload: `replay` refuses it (exit
    2, saying why) and the dead letter stays, with its original size and digest; it used to
    publish the prefix as a new injury and delete the only record of the whole."""
    from auto_healer.cli import main

    from tests.agent_support import AgentProcess
    from tests.test_replay import _dead_letters, _publish, _wait_dead_letters

    remote, _work = repo
    url = small_server.url
    agent = AgentProcess(tmp_path, "a", url, remote, jetstream=True).wait_ready()
    try:
        bad = json.dumps(injury("core/src/x/", severity="apocalyptic", pad="p" * 3700)).encode()
        asyncio.run(_publish(url, bad, {"Nats-Msg-Id": "cut-1"}))
        [row] = _wait_dead_letters(capsys, url, 1)
    finally:
        agent.terminate()
    code = main(["replay", str(row["seq"]), "--nats-url", url])
    err = capsys.readouterr().err
    assert code == 2, "a fragment of the injury was replayed"
    assert "cut to fit" in err, err
    assert [r["injury_id"] for r in _dead_letters(capsys, url)] == ["cut-1"]


async def test_hostile_alerts_are_rejected_and_announced_not_lost(repo: tuple[Path, Path]) -> None:
    """A Hive alert whose timestamp is an integer too large for a float is rejected (one event,
    one dead letter), not an internal error naked without end; an identifier with a lone
    surrogate does not become an id no strict JSON reader can read."""
    from auto_healer.sources import Delivery

    from tests.inprocess import RecordingSettler, run_agent

    _remote, work = repo
    bodies = [
        b'{"alert": {"message": "disk"}, "timestamp": ' + b"9" * 400 + b"}",
        b'{"message": "lone", "identifier": "\\udfff"}',
    ]
    settlers = [RecordingSettler() for _ in bodies]
    subject = "aura.hive.events.alert_high"
    deliveries = [
        Delivery(data=b, subject=subject, received_at=0.0, settler=s, max_attempts=5)
        for b, s in zip(bodies, settlers, strict=True)
    ]
    pub = await run_agent(work, deliveries)
    assert [s.calls for s in settlers] == [["term"], ["ack"]]
    first, second = sorted(pub.events(), key=lambda e: e["metadata"]["outcome"], reverse=True)
    assert first["metadata"]["outcome"] == "rejected"
    assert "timestamp" in first["metadata"]["reason"]
    assert len(pub.dead_letters()) == 1
    second["metadata"]["injury_id"].encode()  # no lone surrogate


def test_history_and_show_write_no_escape_sequence_a_publisher_sent(
    tmp_path: Path,
    nats_server: NatsServer,
    repo: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An injury whose path holds terminal escape sequences (retitle, clear the screen) and a
    newline: `history` and `show` print them escaped, one line per entry; they reached the
    operator's terminal raw."""
    from auto_healer.cli import main

    from tests.agent_support import AgentProcess, Events, wait_until

    remote, _work = repo
    url = nats_server.url
    evil = "core/src/\x1b]0;PWNED\x07\x1b[2J\nforged line/"

    async def publish() -> None:
        events = await Events().start(url)
        nc = await nats.connect(url)
        body = json.dumps(injury(evil)).encode()
        await nc.jetstream().publish("aura.hive.injury", body, headers={"Nats-Msg-Id": "evil-1"})
        await nc.close()
        await wait_until(
            lambda: events.of_type("injury_skipped"), 20, "the outcome", seen=events.seen
        )
        await events.close()

    agent = AgentProcess(tmp_path, "a", url, remote, jetstream=True).wait_ready()
    try:
        asyncio.run(publish())
    finally:
        agent.terminate()
    assert main(["history", "--nats-url", url]) == 0
    history_out = capsys.readouterr().out
    assert main(["show", "evil-1", "--nats-url", url]) == 0
    show_out = capsys.readouterr().out
    for out in (history_out, show_out):
        assert "\x1b" not in out and "\x07" not in out and "\nforged line" not in out, out
        assert "\\x1b]0;PWNED\\x07" in out


async def test_a_bee_keeper_envelope_is_answered_while_a_slow_heal_holds_the_slot(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Core NATS, the one slot taken by a slow heal: the real bee-keeper's envelope of two
    free-text injuries is escalated before the heal ends (it waited for the slot; a page for a
    human behind every heal in flight)."""
    from tests.agent_support import wait_until
    from tests.conftest import git
    from tests.test_push_race import _slow_formatter_books

    _remote, work = repo
    (work / "messy.py").write_text("x  =  1\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=bee", "-c", "user.email=b@h", "commit", "-qm", "messy")
    git(work, "push", "-q", "origin", "main")
    books = _slow_formatter_books(tmp_path, 2.0)
    nc = await nats.connect(nats_server.url)
    agent, checkout, publisher, _metrics = core_agent(nc, work, playbooks=books, grace_period_s=0)
    runner = asyncio.create_task(agent.run(install_signals=False))
    envelope = {"agent": "bee.Keeper", "injuries": ["GitHub: comment failed.", "CI is red."]}
    try:
        await wait_until(lambda: agent.subscribed, 10, "the subscription")
        heal = injury("messy.py", injury_type="unformatted_code")
        for body in (heal, envelope):
            await nc.publish("aura.hive.injury", json.dumps(body).encode())
        await nc.flush()
        await wait_until(lambda: len(publisher.events()) >= 2, 1.5, "the envelope's escalations")
    finally:
        agent.stopping.set()
        await runner
        await nc.close()
        checkout.close()
    kinds = [e["event_type"] for e in publisher.events()][:2]
    assert kinds == ["injury_escalated", "injury_escalated"]


def _raw_publish(url: str, frames: list[tuple[bytes, bytes, bytes]]) -> None:
    """Publish (subject, header block, body) frames as raw protocol, as a hostile client may:
    nats-py would refuse to send them."""
    import socket

    host, port = url.removeprefix("nats://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.recv(4096)  # INFO
        s.sendall(b'CONNECT {"verbose":false,"headers":true}\r\n')
        for subject, head, body in frames:
            size = b"%d %d" % (len(head), len(head) + len(body))
            s.sendall(b"HPUB " + subject + b" " + size + b"\r\n" + head + body + b"\r\n")
        s.sendall(b"PING\r\n")
        assert s.recv(4096).endswith(b"PONG\r\n")


async def test_a_message_nats_py_cannot_decode_does_not_end_the_agents_intake(
    tmp_path: Path, nats_server: NatsServer, repo: tuple[Path, Path]
) -> None:
    """A header block nats-py cannot decode (a status of bytes that are no UTF-8) or an alert
    subject that is no UTF-8: the agent still answers each and everything after; nats-py's
    read loop ended for good on the first, the connection still up (readyz 200, no injury
    ever answered again until the server's pings went stale, minutes later)."""
    from tests.agent_support import AgentProcess, Events, wait_until

    remote, _work = repo
    url = nats_server.url
    events = await Events().start(url, "aura.hive.events.injury_escalated")  # no alert_\xff
    env = {"SOURCE_SUBJECTS": "aura.hive.events.alert_*"}
    agent = AgentProcess(tmp_path, "a", url, remote, env=env).wait_ready()
    try:
        nobody = json.dumps(injury("x/", injury_type="nobody_claims_this")).encode()
        alert = b'{"message": "disk full"}'
        _raw_publish(
            url,
            [
                (b"aura.hive.injury", b"NATS/1.0 \xff\xfe\r\n\r\n", nobody),
                (b"aura.hive.events.alert_\xff", b"NATS/1.0\r\n\r\n", alert),
                (b"aura.hive.injury", b"NATS/1.0\r\nNats-Msg-Id: after\r\n\r\n", nobody),
            ],
        )

        def answered() -> list[dict[str, object]]:
            return [e for e in events.items if str(e.get("event_type", "")).startswith("injury_")]

        await wait_until(lambda: len(answered()) >= 2, 10, "both injuries", seen=events.seen)
        ids = [e["metadata"]["injury_id"] for e in answered()]  # type: ignore[index]
        assert len(ids) == 2 and "after" in ids, ids  # the first judged without its headers
        assert agent.get("/readyz")[0] == 200
    finally:
        agent.terminate()
        await events.close()


async def test_an_approved_heal_slower_than_the_reclaim_time_is_not_taken_over_while_alive(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """An approved heal that takes longer than APPROVAL_RECLAIM_AFTER_S on a live replica is
    not taken over by another (its owner keeps it fresh): one outcome, healed; it was taken over
    and carried out twice (on one store: failed, 'another replica is healing this path', and
    the request closed while the heal ran on)."""
    from auto_healer import approvals
    from auto_healer.outcomes import Kind

    from tests.approval_support import Replica, parsed
    from tests.conftest import git
    from tests.test_push_race import _slow_formatter_books

    remote, work = repo
    (work / "messy.py").write_text("x  =  {'a':1}\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=bee", "-c", "user.email=b@h", "commit", "-qm", "messy")
    git(work, "push", "-q", "origin", "main")
    # ~4 s: the heal must outlast the reclaim time (a 1 s formatter against 0.3 s), and a
    # second carrying-out is watched for as long as it would take
    books = _slow_formatter_books(tmp_path, 1.0)
    shipped = books / "unformatted_code.yaml"
    shipped.write_text(shipped.read_text() + "approval: required\n")
    replicas = [
        Replica(tmp_path, n, nats_server.url, remote, playbooks=books, reclaim_after_s=0.3)
        for n in ("a", "b")
    ]
    async with replicas[0] as a, replicas[1] as b:
        ask = parsed("messy.py", injury_type="unformatted_code")
        assert (await a.handle(ask)).kind is Kind.HELD
        await approvals.decide_request(a.cells, ask.id, approve=True, by="erin")
        await a.wait_state(ask.id, "done", timeout_s=30)
        await asyncio.sleep(1.5)  # absence: the heal was not carried out twice
    outcomes = a.announced + b.announced
    assert [o.kind for o in outcomes] == [Kind.HEALED], [o.reason for o in outcomes]
    assert git(remote, "show", "main:messy.py") == 'x = {"a": 1}\n'


def _running(marker: str) -> list[int]:
    """The processes whose command line holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


async def test_a_heal_cut_off_at_stop_leaves_no_formatter_running(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """The grace period over while a formatter runs: when the agent has stopped, the formatter
    was killed with its heal (it ran on, orphaned, and wrote into the restored checkout)."""
    from tests.agent_support import wait_until
    from tests.conftest import git
    from tests.test_push_race import _slow_formatter_books

    _remote, work = repo
    (work / "messy.py").write_text("x  =  1\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=bee", "-c", "user.email=b@h", "commit", "-qm", "messy")
    git(work, "push", "-q", "origin", "main")
    books = _slow_formatter_books(tmp_path, 2.0)
    marker = "time.sleep(2.0)"
    nc = await nats.connect(nats_server.url)
    agent, checkout, _events, _metrics = core_agent(nc, work, playbooks=books, grace_period_s=0)
    runner = asyncio.create_task(agent.run(install_signals=False))
    try:
        await wait_until(lambda: agent.subscribed, 10, "the subscription")
        heal = injury("messy.py", injury_type="unformatted_code")
        await nc.publish("aura.hive.injury", json.dumps(heal).encode())
        await nc.flush()
        await wait_until(lambda: _running(marker), 10, "the formatter under way")
    finally:
        agent.stopping.set()
        await runner
        await nc.close()
        checkout.close()
    assert _running(marker) == []
