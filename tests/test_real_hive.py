"""The real Hive's bee-keeper: its batch envelope of free-text injuries, no headers, a
monotonic timestamp; text playbooks; repeats; on a real nats-server in both modes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
import pytest
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess, Events, consumer_info, wait_until
from tests.conftest import git, injury, remote_files
from tests.inprocess import delivery, run_agent
from tests.pager_receiver import Receiver
from tests.test_agent_pager import _pager_env

ENVELOPE = {
    "agent": "bee.Keeper",
    "injuries": ["GitHub: Failed to post purity report comment."],
    "timestamp": 81234.5,
}
TEXT_PLAYBOOK = """\
name: github-comment-failed
match:
  injury_type: free_text
  description: "^GitHub: Failed to post"
free_text: {severity: high}
steps:
  - action: escalate
    with: {reason: "bee-keeper cannot comment on GitHub: check its token"}
"""


def _playbooks(tmp_path: Path) -> Path:
    """The shipped playbooks plus one text playbook."""
    d = tmp_path / "playbooks"
    d.mkdir()
    for p in (Path(__file__).resolve().parent.parent / "playbooks").glob("*.yaml"):
        (d / p.name).write_text(p.read_text())
    (d / "github.yaml").write_text(TEXT_PLAYBOOK)
    return d


async def _plain_publish(url: str, payload: object) -> None:
    """Exactly as bee-keeper does: a plain core-NATS publish, no headers, a new connection."""
    nc = await nats.connect(url)
    await nc.publish("aura.hive.injury", json.dumps(payload).encode())
    await nc.flush()
    await nc.close()


@pytest.mark.parametrize("jetstream", [False, True])
async def test_the_real_envelope_pages_its_text_once_and_dead_letters_nothing(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer, jetstream: bool
) -> None:
    """bee-keeper's envelope with a free-text injury: one page carrying the text, one
    escalated event, no dead letter; the same envelope again pages and heals nothing."""
    remote, _work = repo
    receiver = Receiver().start()
    agent = AgentProcess(
        tmp_path, "a", nats_server.url, remote, jetstream=jetstream, env=_pager_env(receiver)
    )
    events = await Events().start(nats_server.url)
    letters = await Events().start(nats_server.url, "aura.hive.dead_letter.>")
    try:
        agent.wait_ready()
        before = git(remote, "rev-parse", "main")
        sent_at = time.time()
        await _plain_publish(nats_server.url, ENVELOPE)
        await wait_until(lambda: len(receiver.delivered) >= 1, 30, "the page", seen=agent.logs)
        [outcome] = await events.wait_for(1, timeout_s=30)
        assert outcome["subject"] == "aura.hive.events.injury_escalated"
        meta = outcome["metadata"]
        assert meta["injury"]["description"] == ENVELOPE["injuries"][0]
        assert meta["injury"]["source"] == "bee.Keeper"
        assert meta["injury"]["timestamp"] == 81234.5  # kept as given
        assert meta["dead_lettered"] is False
        [page] = receiver.delivered
        assert "GitHub: Failed to post purity report comment." in page["payload"]["summary"]
        assert page["payload"]["severity"] == "warning"  # medium: no playbook said otherwise
        stamp = page["payload"]["timestamp"]  # the receive time, not 1970
        assert stamp.startswith(time.strftime("%Y-%m-%d", time.gmtime(sent_at)))
        await _plain_publish(nats_server.url, ENVELOPE)  # bee-keeper's next cycle, same text
        await events.wait_for(2, timeout_s=30)
        assert events.items[1]["metadata"]["page"] in ("duplicate", "grouped")
        assert len(receiver.delivered) == 1
        assert letters.items == []
        assert git(remote, "rev-parse", "main") == before
        if jetstream:
            c = await consumer_info(nats_server.url)
            assert (c.num_pending, c.num_ack_pending, c.num_redelivered) == (0, 0, 0)
    finally:
        await events.close()
        await letters.close()
        receiver.stop()
        agent.kill()


async def test_a_mixed_envelope_heals_escalates_and_refuses_each_entry_on_its_own(
    repo: tuple[Path, Path],
) -> None:
    """Documented injury, free text and a bad entry in one envelope: healed, escalated and
    refused (naming its index), one event each, one dead letter, one settlement."""
    remote, work = repo
    body = json.dumps(
        {
            "agent": "bee.Keeper",
            "timestamp": 12.5,
            "injuries": [injury("core/src/random_stuff/"), "disk almost full", 42],
        }
    ).encode()
    d, settler = delivery(body, max_attempts=5)
    pub = await run_agent(work, [d])
    assert settler.calls == ["ack"]
    kinds = [e["event_type"] for e in pub.events()]
    assert kinds == ["injury_healed", "injury_escalated", "injury_rejected"]
    ids = [e["metadata"]["injury_id"] for e in pub.events()]
    assert len({i.rsplit(":", 1)[0] for i in ids}) == 1
    assert [i.rsplit(":", 1)[1] for i in ids] == ["0", "1", "2"]
    rejected = pub.events()[2]["metadata"]["reason"]
    assert rejected.startswith("injuries[2]: an entry must be an injury object or a free-text")
    [letter] = pub.dead_letters()
    assert letter.headers is not None
    assert letter.headers["Auto-Healer-Injury-Id"] == ids[2]
    assert not any(f.startswith("core/src/random_stuff/") for f in remote_files(remote))
    again, settler2 = delivery(body, max_attempts=5)
    pub2 = await run_agent(work, [again])
    assert settler2.calls == ["ack"]
    assert pub2.events()[0]["event_type"] == "injury_skipped"  # healed once


async def test_a_text_playbook_routes_the_text_with_its_own_summary_and_severity(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """`match: {description: regex}` claims the text; the playbook's severity and reason go out."""
    from auto_healer.pager import Pager

    from tests.test_pager import settings_for

    _remote, work = repo
    receiver = Receiver().start()
    pager = Pager(settings_for(receiver.url, tmp_path), dry_run=False)
    await pager.start()
    try:
        other = dict(ENVELOPE, injuries=[ENVELOPE["injuries"][0], "something else broke"])
        d, _settler = delivery(json.dumps(other).encode())
        pub = await run_agent(work, [d], pager=pager, playbooks=_playbooks(tmp_path))
        first, second = pub.events()
        assert first["metadata"]["playbook"] == "github-comment-failed"
        assert second["metadata"]["playbook"] is None
        pages = receiver.delivered
        assert len(pages) == 2  # two texts, two problems
        assert pages[0]["dedup_key"] != pages[1]["dedup_key"]
        assert pages[0]["payload"]["severity"] == "error"  # high, from the playbook
        assert "check its token" in pages[0]["payload"]["summary"]
        assert "GitHub: Failed to post" in pages[0]["payload"]["summary"]
        assert "no playbook claims this free-text injury" in pages[1]["payload"]["summary"]
    finally:
        await pager.aclose()
        receiver.stop()


def test_match_knows_envelopes_and_text_playbooks(tmp_path: Path) -> None:
    """`auto-healer match` prints the playbook of each entry of an envelope."""
    import subprocess
    import sys

    path = tmp_path / "envelope.json"
    path.write_text(json.dumps(ENVELOPE))
    argv = [sys.executable, "-m", "auto_healer", "match", str(path)]
    proc = subprocess.run(
        [*argv, "--playbooks", str(_playbooks(tmp_path))], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)  # one entry: one object, as for a single injury
    assert (found["playbook"], found["severity"], found["auto_heal"]) == (
        "github-comment-failed",
        "high",
        False,
    )
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "one.yaml").write_text(
        (Path(__file__).resolve().parent.parent / "playbooks" / "unformatted_code.yaml").read_text()
    )
    proc = subprocess.run([*argv, "--playbooks", str(bare)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no playbook matches 'free_text'" in proc.stdout


def test_a_bad_text_playbook_expression_is_a_load_error_naming_the_line(tmp_path: Path) -> None:
    """An invalid regular expression is refused at load, with file and line."""
    from auto_healer.errors import ConfigError
    from auto_healer.playbooks import load_playbooks

    d = tmp_path / "pb"
    d.mkdir()
    (d / "bad.yaml").write_text(TEXT_PLAYBOOK.replace("^GitHub: Failed to post", "(unclosed"))
    with pytest.raises(ConfigError, match=r"bad.yaml:4: field 'match.description': not a valid"):
        load_playbooks(d)


async def test_the_hives_protobuf_and_json_alerts_are_taken_in_as_injuries(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """`SOURCE_SUBJECTS=aura.hive.events.alert_*`: an upstream-style protobuf alert (built with
    the protobuf runtime) and a JSON one are escalated with their message; our own events are
    not taken back in."""
    from auto_healer.proto.aura.core.v1 import event_pb2 as pb

    remote, _work = repo
    receiver = Receiver().start()
    env = {**_pager_env(receiver), "SOURCE_SUBJECTS": "aura.hive.events.alert_*"}
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, env=env)
    events = await Events().start(nats_server.url, "aura.hive.events.*")

    def outcomes() -> list[dict[str, object]]:
        return [e for e in events.items if str(e["subject"]).startswith("aura.hive.events.injury_")]

    try:
        agent.wait_ready()
        alert = pb.Event(identifier="evt-42", topic="aura.hive.events.alert_error")
        alert.alert.severity = pb.SEVERITY_ERROR
        alert.alert.message = "core: negotiation engine unreachable"
        alert.alert.source = "core-service"
        alert.timestamp.GetCurrentTime()
        nc = await nats.connect(nats_server.url)
        await nc.publish("aura.hive.events.alert_error", alert.SerializeToString())
        await nc.publish(
            "aura.hive.events.alert_warning",
            json.dumps(
                {"severity": "warning", "message": "disk 91% full", "source": "vm"}
            ).encode(),
        )
        await nc.flush()
        await nc.close()
        await wait_until(lambda: len(receiver.delivered) >= 2, 30, "two pages", seen=agent.logs)
        await wait_until(lambda: len(outcomes()) >= 2, 30, "two outcome events", seen=agent.logs)
        by_text = {e["metadata"]["injury"]["description"]: e for e in outcomes()}
        proto = by_text["core: negotiation engine unreachable"]
        assert proto["event_type"] == "injury_escalated"
        assert proto["metadata"]["injury_id"] == "alert:evt-42"
        assert proto["metadata"]["injury"]["injury_type"] == "alert"
        assert proto["metadata"]["injury"]["severity"] == "high"
        assert proto["metadata"]["injury"]["source"] == "core-service"
        assert by_text["disk 91% full"]["metadata"]["injury"]["severity"] == "medium"
        pages = {p["payload"]["summary"]: p for p in receiver.delivered}
        [summary] = [s for s in pages if "negotiation engine unreachable" in s]
        assert pages[summary]["payload"]["severity"] == "error"
        await asyncio.sleep(1.0)  # our own two escalation events must not come back as alerts
        assert len(outcomes()) == 2
        assert len(receiver.delivered) == 2
    finally:
        await events.close()
        receiver.stop()
        agent.kill()


def test_a_source_subject_that_would_take_our_own_events_is_refused() -> None:
    """`aura.hive.events.>` would feed the agent its own escalations: a clear start-up error."""
    from auto_healer.alerts import check_subjects, subject_matches
    from auto_healer.errors import ConfigError

    assert subject_matches("aura.hive.events.alert_*", "aura.hive.events.alert_error")
    assert not subject_matches("aura.hive.events.alert_*", "aura.hive.events.alert_error.x")
    assert subject_matches("aura.>", "aura.hive.events.x")
    assert not subject_matches("aura.hive.>", "aura.hive")
    assert check_subjects(["aura.hive.events.error"]) == ["aura.hive.events.error"]
    assert subject_matches("aura.hive.events.alert_*", "aura.hive.events.alert_x")
    assert not subject_matches("aura.hive.events.alert_*", "aura.hive.events.injury_escalated")
    for bad in ("aura.hive.events.>", "aura.hive.events.*", ">", "aura.hive.injury", "*.*.*.inj*"):
        with pytest.raises(ConfigError, match="would consume"):
            check_subjects([bad])
