"""The operator controls on real replicas: pause/resume, the breaker, the history."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from auto_healer.embedded import NatsServer

from tests.agent_support import (
    AgentProcess,
    Events,
    consumer_info,
    remote_tree,
    seed_dirs,
    wait_until,
)
from tests.conftest import git, injury
from tests.pager_receiver import Receiver

pytestmark = pytest.mark.timeout(180)


def ctl(url: str, *args: str) -> str:
    """Run one `auto-healer` operator command as an operator would; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "auto_healer", *args, "--nats-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _publish(url: str, paths: list[str], *, jetstream: bool, **extra: object) -> None:
    nc = await nats.connect(url)
    for path in paths:
        data = json.dumps(injury(path, **extra)).encode()
        if jetstream:
            await nc.jetstream().publish("aura.hive.injury", data)
        else:
            await nc.publish("aura.hive.injury", data)
    await nc.flush()
    await nc.drain()


def outcomes(events: Events) -> list[dict[str, object]]:
    """The outcome events among those seen (not the controls' own)."""
    return [e for e in events.items if str(e["event_type"]).startswith("injury_")]


async def wait_outcomes(events: Events, count: int, timeout_s: float = 60) -> None:
    await wait_until(
        lambda: len(outcomes(events)) >= count, timeout_s, f"{count} outcomes", seen=events.seen
    )


def _strays(remote: Path, names: list[str]) -> list[str]:
    return [n for n in names if any(f"/{n}/" in p for p in remote_tree(remote))]


async def test_pause_stops_both_replicas_within_2s_and_resume_heals_what_waited(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """JetStream, two replicas: pause is seen by both within 2 s, nothing heals and nothing is
    lost while paused; resume heals every injury that waited, each once."""
    remote, work = repo
    names = [f"stray{i}" for i in range(6)]
    seed_dirs(work, names)
    agents = [
        AgentProcess(tmp_path, f"a{i}", nats_server.url, remote, jetstream=True) for i in range(2)
    ]
    events = await Events().start(nats_server.url)
    try:
        for a in agents:
            a.wait_ready()
        started = time.monotonic()
        out = ctl(nats_server.url, "pause", "--reason", "maintenance", "--by", "alice")
        assert "paused by alice: maintenance" in out
        for a in agents:
            await wait_until(lambda a=a: a.metric("auto_healer_paused") == 1, 2, f"{a.name} paused")
        assert time.monotonic() - started < 2 + 5  # the command itself starts a Python
        await _publish(nats_server.url, [f"core/src/{n}/" for n in names], jetstream=True)
        # Absence can't be awaited: a heal while paused would be announced within this window.
        await asyncio.sleep(3)
        assert outcomes(events) == []
        assert _strays(remote, names) == names
        c = await consumer_info(nats_server.url)
        assert c.ack_floor.stream_seq == 0  # nothing settled for good: all wait in the stream
        for a in agents:
            assert a.get("/readyz")[0] == 200  # paused is still ready
        ctl(nats_server.url, "resume", "--by", "alice")
        await wait_outcomes(events, len(names))
        await asyncio.sleep(0.5)  # a duplicate heal would be announced within this window
        healed = events.of_type("injury_healed")
        assert len(outcomes(events)) == len(healed) == len(names)
        assert len({e["metadata"]["injury_id"] for e in healed}) == len(names)
        assert _strays(remote, names) == []
        for a in agents:
            assert a.metric("auto_healer_paused") == 0
            assert a.terminate() == 0, a.logs()
    finally:
        await events.close()
        for a in agents:
            a.kill()


async def test_core_mode_pause_escalates_with_the_reason_and_auto_heal_false_still_pages(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Core NATS cannot hold an injury: paused, it is escalated saying so; an auto_heal: false
    injury is escalated as always."""
    remote, work = repo
    seed_dirs(work, ["kept"])
    agent = AgentProcess(
        tmp_path, "a", nats_server.url, remote, env={"HEARTBEAT_INTERVAL_SEC": "0.3"}
    )
    events = await Events().start(nats_server.url)
    beats = await Events().start(nats_server.url, "aura.hive.heartbeat")
    try:
        agent.wait_ready()
        ctl(nats_server.url, "pause", "--reason", "deploy freeze", "--by", "bob")
        await wait_until(lambda: agent.metric("auto_healer_paused") == 1, 2, "the pause")
        await wait_until(
            lambda: any(b["metadata"].get("paused") for b in beats.items), 5, "a paused heartbeat"
        )
        beat = next(b["metadata"] for b in beats.items if b["metadata"].get("paused"))
        assert (beat["paused_by"], beat["paused_reason"]) == ("bob", "deploy freeze")
        assert beat["paused_since"] <= time.time() and beat["breaker_open"] is False
        await _publish(nats_server.url, ["core/src/kept/"], jetstream=False)
        await _publish(nats_server.url, ["core/src/other/"], jetstream=False, auto_heal=False)
        await wait_outcomes(events, 2)
        kinds = sorted(str(e["event_type"]) for e in outcomes(events))
        assert kinds == ["injury_escalated", "injury_held"]
        held = events.of_type("injury_held")[0]
        assert "paused by bob: deploy freeze" in held["metadata"]["reason"]
        assert held["metadata"]["escalation"] == "none"  # no pager configured here
        assert _strays(remote, ["kept"]) == ["kept"]
    finally:
        await events.close()
        await beats.close()
        agent.kill()


def _pager_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "PAGER_WEBHOOK_URL": receiver.url,
        "PAGER_FORMAT": "pagerduty",
        "PAGER_ROUTING_KEY": "R0UTING-KEY",
        "PAGER_ATTEMPTS": "1",
        "PAGER_DRAIN_INTERVAL_S": "0.2",
        **extra,
    }


async def test_breaker_counted_across_replicas_pages_once_and_holds_the_rest(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """50 distinct injuries against a breaker of 10 on two replicas (the issue's figures): 10
    heal, one page, 40 held in the stream (not lost, not healed); a reset lets 10 more heal."""
    remote, work = repo
    names = [f"b{i:02d}" for i in range(50)]
    seed_dirs(work, names)
    receiver = Receiver().start()
    env = _pager_env(receiver, BREAKER_MAX_HEALS="10", BREAKER_WINDOW_S="3600")
    agents = [
        AgentProcess(tmp_path, f"a{i}", nats_server.url, remote, jetstream=True, env=env)
        for i in range(2)
    ]
    events = await Events().start(nats_server.url)
    try:
        for a in agents:
            a.wait_ready()
        await _publish(nats_server.url, [f"core/src/{n}/" for n in names], jetstream=True)

        def triggers() -> list[dict[str, object]]:
            return [p for p in receiver.delivered if p["event_action"] == "trigger"]

        await wait_until(lambda: len(triggers()) >= 1, 60, "the breaker's page", seen=events.seen)
        await wait_until(
            lambda: all(a.metric("auto_healer_breaker_open") == 1 for a in agents),
            5,
            "both replicas to see the breaker open",
        )
        # Absence can't be awaited: a heal past the limit would be announced within this window.
        await asyncio.sleep(3)
        assert len(events.of_type("injury_healed")) == 10, events.seen()
        assert len(triggers()) == 1
        assert "breaker" in str(triggers()[0]["payload"])
        assert len(_strays(remote, names)) == 40
        c = await consumer_info(nats_server.url)
        assert c.num_pending + c.num_ack_pending == 40  # every held injury is still in the stream
        out = ctl(nats_server.url, "reset-breaker", str(remote), "--by", "carol")
        assert "it was open: 10 heals" in out
        await wait_until(
            lambda: len(events.of_type("injury_healed")) >= 20, 60, "10 more heals after the reset"
        )
        await wait_until(lambda: len(triggers()) >= 2, 30, "the second trip's page")
        assert len(_strays(remote, names)) == 30
    finally:
        await events.close()
        receiver.stop()
        for a in agents:
            a.kill()


async def test_history_and_show_answer_from_the_stream_after_both_replicas_restarted(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Outcomes and controls are kept in AURA_HEAL_HISTORY; `history` and `show` read them back
    after every replica stopped and started again."""
    remote, work = repo
    seed_dirs(work, ["h1", "h2"])
    events = await Events().start(nats_server.url)
    agents = [
        AgentProcess(tmp_path, f"a{i}", nats_server.url, remote, jetstream=True) for i in range(2)
    ]
    try:
        for a in agents:
            a.wait_ready()
        await _publish(nats_server.url, ["core/src/h1/", "core/src/h2/"], jetstream=True)
        await _publish(nats_server.url, ["core/src/h3/"], jetstream=True, auto_heal=False)
        await wait_outcomes(events, 3)
        ctl(nats_server.url, "pause", "--reason", "audit", "--by", "dana")
        ctl(nats_server.url, "resume", "--by", "dana")
        for a in agents:
            assert a.terminate() == 0, a.logs()
        agents = [
            AgentProcess(tmp_path, f"r{i}", nats_server.url, remote, jetstream=True)
            for i in range(2)
        ]
        for a in agents:
            a.wait_ready()
        found = json.loads(ctl(nats_server.url, "history", "--since", "1h", "--format", "json"))
        kinds = sorted(e["metadata"].get("outcome") or e["metadata"]["control"] for e in found)
        assert kinds == ["escalated", "healed", "healed", "pause", "resume"]
        healed = json.loads(
            ctl(nats_server.url, "history", "--kind", "healed", "--path", "core/src/h1*",
                "--format", "json")
        )  # fmt: skip
        assert len(healed) == 1
        commit = healed[0]["metadata"]["commit"]
        assert commit in git(remote, "log", "--format=%H", "main").split()
        text = ctl(nats_server.url, "history")
        assert "control   pause by dana  audit" in text
        story = ctl(nats_server.url, "show", healed[0]["metadata"]["injury_id"])
        assert f"commit: {commit}" in story
        assert "injury: unauthorized_directory at core/src/h1/" in story
        missing = subprocess.run(
            [sys.executable, "-m", "auto_healer", "show", "nope", "--nats-url", nats_server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 1 and "no history for injury 'nope'" in missing.stdout
    finally:
        await events.close()
        for a in agents:
            a.kill()


def _approval_playbooks(tmp: Path) -> Path:
    """The shipped playbooks, the directory one needing a human's approval first."""
    from tests.conftest import PLAYBOOKS

    pb = tmp / "approval-playbooks"
    pb.mkdir()
    for source in PLAYBOOKS.glob("*.yaml"):
        text = source.read_text()
        if source.name == "unauthorized_directory.yaml":
            text += "approval: required\n"
        (pb / source.name).write_text(text)
    return pb


async def test_approval_holds_the_injury_until_approved_then_one_replica_heals_it_once(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """JetStream, two replicas: an `approval: required` injury is held and paged with the plan
    and the commands; `approve` heals it once; `reject` closes another and resolves its page."""
    remote, work = repo
    seed_dirs(work, ["wanted", "unwanted"])
    receiver = Receiver().start()
    pb = _approval_playbooks(tmp_path)
    agents = [
        AgentProcess(
            tmp_path, f"a{i}", nats_server.url, remote, jetstream=True, playbooks=pb,
            env=_pager_env(receiver),
        )
        for i in range(2)
    ]  # fmt: skip
    events = await Events().start(nats_server.url)
    try:
        for a in agents:
            a.wait_ready()
        await _publish(nats_server.url, ["core/src/wanted/", "core/src/unwanted/"], jetstream=True)
        await wait_outcomes(events, 2)
        held = events.of_type("injury_held")
        assert len(held) == 2, events.seen()
        ids = {e["metadata"]["injury"]["affected_path"]: e["metadata"]["injury_id"] for e in held}
        wanted, unwanted = ids["core/src/wanted/"], ids["core/src/unwanted/"]
        await wait_until(lambda: len(receiver.delivered) >= 2, 20, "the two approval pages")
        summaries = " ".join(str(p["payload"]["summary"]) for p in receiver.delivered)
        assert f"auto-healer approve {wanted}" in summaries
        assert "delete_directory on core/src/wanted" in summaries
        c = await consumer_info(nats_server.url)
        assert (c.num_pending, c.num_ack_pending) == (0, 0)  # the requests hold them, not NATS
        assert _strays(remote, ["wanted", "unwanted"]) == ["wanted", "unwanted"]

        out = ctl(nats_server.url, "approve", wanted, "--by", "erin")
        assert f"injury {wanted} approved by erin" in out
        await wait_until(lambda: events.of_type("injury_healed"), 30, "the approved heal")
        ctl(nats_server.url, "reject", unwanted, "--by", "erin", "--reason", "keep it")
        await wait_until(lambda: events.of_type("injury_skipped"), 30, "the rejection")
        # Absence can't be awaited: a second heal of the approval would arrive in this window.
        await asyncio.sleep(2)
        healed = events.of_type("injury_healed")
        assert len(healed) == 1 and healed[0]["metadata"]["injury_id"] == wanted
        assert "approved by erin" in healed[0]["metadata"]["reason"]
        assert _strays(remote, ["wanted", "unwanted"]) == ["unwanted"]
        skipped = events.of_type("injury_skipped")[0]["metadata"]
        assert skipped["reason"] == "rejected by erin: keep it"
        resolves = [p for p in receiver.delivered if p["event_action"] == "resolve"]
        assert len(resolves) == 2  # the healed one's page and the rejected one's
        again = subprocess.run(
            [sys.executable, "-m", "auto_healer", "approve", unwanted, "--nats-url",
             nats_server.url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert again.returncode == 2 and "is closed" in again.stderr
        story = ctl(nats_server.url, "show", wanted)
        assert "held: awaiting approval" in story
        assert "approved by erin" in story
        assert "healed: " in story and f"commit: {healed[0]['metadata']['commit']}" in story
    finally:
        await events.close()
        receiver.stop()
        for a in agents:
            a.kill()


async def test_a_directory_that_keeps_coming_back_stops_being_deleted_the_4th_time(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """With `recurrence: {max_heals: 3}` the 4th return of one problem is held for approval and
    paged as a fix that does not hold, naming the three heal commits."""
    from tests.conftest import PLAYBOOKS

    remote, work = repo
    pb = tmp_path / "recurrence-playbooks"
    pb.mkdir()
    text = (PLAYBOOKS / "unauthorized_directory.yaml").read_text()
    text = text.replace("throttle:\n  window_s: 60\n", "")  # every return is healed
    (pb / "unauthorized_directory.yaml").write_text(
        text + "recurrence:\n  max_heals: 3\n  window_s: 3600\n"
    )
    receiver = Receiver().start()
    agent = AgentProcess(
        tmp_path, "a", nats_server.url, remote, jetstream=True, playbooks=pb,
        env=_pager_env(receiver),
    )  # fmt: skip
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        for i in range(4):
            git(work, "pull", "-q", "--rebase", "origin", "main")
            seed_dirs(work, ["back"])
            await _publish(
                nats_server.url, ["core/src/back/"], jetstream=True, timestamp=1735920000.0 + i
            )
            await wait_outcomes(events, i + 1)
        kinds = [e["event_type"] for e in outcomes(events)]
        assert kinds == ["injury_healed"] * 3 + ["injury_held"], events.seen()
        commits = [e["metadata"]["commit"][:12] for e in events.of_type("injury_healed")]
        why = events.of_type("injury_held")[0]["metadata"]["reason"]
        assert "the fix does not hold: healed 3 times" in why
        assert all(c in why for c in commits)
        assert _strays(remote, ["back"]) == ["back"]
        await wait_until(
            lambda: any("does not hold" in str(p) for p in receiver.delivered), 20, "the page"
        )
        triggers = [p for p in receiver.delivered if p["event_action"] == "trigger"]
        assert len(triggers) == 1
    finally:
        await events.close()
        receiver.stop()
        agent.kill()


async def test_paused_in_jetstream_mode_hive_alerts_still_page_and_injuries_still_wait(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """`--source-subject` alerts share the intake's slots: while paused (JetStream), an alert is
    still escalated and paged at once, while an injury waits unfetched in the stream."""
    remote, work = repo
    seed_dirs(work, ["waits"])
    receiver = Receiver().start()
    env = _pager_env(receiver, SOURCE_SUBJECTS="aura.hive.events.alert_*")
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True, env=env)
    events = await Events().start(nats_server.url)
    try:
        agent.wait_ready()
        ctl(nats_server.url, "pause", "--reason", "freeze", "--by", "bob")
        await wait_until(lambda: agent.metric("auto_healer_paused") == 1, 2, "the pause")
        closed = "intake_closed"
        await wait_until(lambda: closed in agent.logs(), 5, closed, seen=agent.logs)
        await _publish(nats_server.url, ["core/src/waits/"], jetstream=True)
        nc = await nats.connect(nats_server.url)
        message = {"severity": "critical", "message": "disk 99% full", "source": "vm"}
        alert = {"event_type": "alert_critical", "success": False, "alert": message}
        await nc.publish("aura.hive.events.alert_critical", json.dumps(alert).encode())
        await nc.drain()
        await wait_until(lambda: events.of_type("injury_escalated"), 10, "the alert's escalation",
                         seen=agent.logs)  # fmt: skip
        await wait_until(lambda: receiver.delivered, 10, "the alert's page", seen=agent.logs)
        assert "disk 99% full" in str(receiver.delivered[0]["payload"]["summary"])
        c = await consumer_info(nats_server.url)
        assert (c.num_pending, c.num_ack_pending) == (1, 0)  # the injury waits, unfetched
        ctl(nats_server.url, "resume", "--by", "bob")
        await wait_until(lambda: events.of_type("injury_healed"), 30, "the heal after resume")
        assert _strays(remote, ["waits"]) == []
    finally:
        await events.close()
        receiver.stop()
        agent.kill()
