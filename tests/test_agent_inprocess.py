"""The agent's logic in-process: real pipeline, real git repo, a fake source and recorder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.conftest import commit_count, git, injury, remote_files
from tests.inprocess import RecordingPublisher, delivery, run_agent


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


async def test_a_valid_injury_is_healed_acked_once_and_announced_once(
    repo: tuple[Path, Path],
) -> None:
    """One valid injury: the directory leaves the remote, one ack, one injury_healed event."""
    remote, work = repo
    assert any(f.startswith("core/src/random_stuff/") for f in remote_files(remote))
    d, settler = delivery(_body(injury("core/src/random_stuff/")), max_attempts=5)
    pub = await run_agent(work, [d])
    assert settler.calls == ["ack"]
    [event] = pub.events()
    assert event["event_type"] == "injury_healed"
    assert event["metadata"]["settle"] == "ack"
    assert pub.dead_letters() == []
    assert not any(f.startswith("core/src/random_stuff/") for f in remote_files(remote))


async def test_a_poison_payload_is_terminated_dead_lettered_and_logged(
    repo: tuple[Path, Path],
) -> None:
    """Garbage is terminated once, dead-lettered once, announced once and logged at warning."""
    remote, work = repo
    before = git(remote, "rev-parse", "main")
    d, settler = delivery(b"\xff\xfe not json", {"Nats-Msg-Id": "poison-1"}, max_attempts=5)
    with capture_logs() as logs:
        pub = await run_agent(work, [d])
    assert settler.calls == ["term"]
    [event] = pub.events()
    assert event["event_type"] == "injury_rejected"
    assert event["metadata"]["dead_lettered"] is True
    [letter] = pub.dead_letters()
    assert letter.payload == b"\xff\xfe not json"
    assert letter.headers is not None
    assert letter.headers["Auto-Healer-Injury-Id"] == "poison-1"
    [warning] = [e for e in logs if e["event"] == "injury_rejected"]
    assert warning["log_level"] == "warning"
    assert warning["injury_id"] == "poison-1"
    assert warning["subject"] == "aura.hive.injury"
    assert "not json" not in json.dumps(warning, default=str)  # the reason, never the body
    assert git(remote, "rev-parse", "main") == before


async def test_a_dead_letter_that_cannot_be_written_brings_the_message_back(
    repo: tuple[Path, Path],
) -> None:
    """When the dead letter is lost, the poison is nak'd (not terminated) while it can return."""
    _remote, work = repo
    d, settler = delivery(b"{", max_attempts=5, attempt=2)
    pub = await run_agent(work, [d], publisher=RecordingPublisher(fail=True))
    assert settler.calls == ["nak:10"]
    last, last_settler = delivery(b"{", max_attempts=5, attempt=5)
    await run_agent(work, [last], publisher=RecordingPublisher(fail=True))
    assert last_settler.calls == ["term"]
    assert pub.sent == []


async def test_dry_run_acks_rejections_and_writes_no_dead_letter(
    repo: tuple[Path, Path],
) -> None:
    """A dry-run replica's private consumer keeps nothing and it writes nothing shared."""
    remote, work = repo
    before = git(remote, "rev-parse", "main")
    bad, bad_settler = delivery(b"[]", max_attempts=5)
    good, good_settler = delivery(_body(injury("core/src/random_stuff/")), max_attempts=5)
    pub = await run_agent(work, [bad, good], dry_run=True)
    assert bad_settler.calls == ["ack"]
    assert good_settler.calls == ["ack"]
    assert sorted(e["event_type"] for e in pub.events()) == [
        "injury_heal_planned",
        "injury_rejected",
    ]
    assert pub.dead_letters() == []
    assert git(remote, "rev-parse", "main") == before


HEADER_NAMES = st.sampled_from(["Nats-Msg-Id", "Aura-Signature", "X-Other", "nats-msg-id"])
HEADERS = st.dictionaries(HEADER_NAMES, st.text(max_size=40), max_size=3)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda p, s: _body(injury(p, auto_heal=False, note=s)),
        st.sampled_from(["core/src/random_stuff/", "../etc", "/abs", "core/src/app.py"]),
        st.text(max_size=30),
    ),
    st.builds(lambda s: json.dumps({"injury_type": s}).encode(), st.text(max_size=20)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=BODIES, headers=HEADERS, attempt=st.integers(1, 5))
@pytest.mark.timeout(300)
def test_any_message_is_settled_once_announced_once_and_changes_nothing(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, headers: dict[str, str], attempt: int
) -> None:
    """For any body and headers that cannot heal: one settlement, at most one event, and the
    remote untouched."""
    import asyncio

    from auto_healer.demo import SEED, make_repo

    remote, work = make_repo(tmp_path_factory.mktemp("r"), SEED)
    commits = commit_count(remote)
    d, settler = delivery(body, headers, attempt=attempt, max_attempts=5)
    pub = asyncio.run(run_agent(work, [d]))
    assert len(settler.calls) == 1, settler.calls
    events = pub.events()
    if settler.calls[0].startswith("nak"):
        assert events == []
    else:
        assert len(events) == 1
        assert events[0]["metadata"]["settle"] == settler.calls[0]
    assert commit_count(remote) == commits


@pytest.mark.parametrize("redeliverable", [False, True])
async def test_no_page_is_lost_for_a_lone_surrogate_while_the_pager_fails(
    repo: tuple[Path, Path], tmp_path: Path, redeliverable: bool
) -> None:
    """An auto_heal=false injury holding "\\udc80" while the pager answers 500: queued (core)
    or nak'd (JetStream), then delivered once with the text intact."""
    from auto_healer.pager import Pager

    from tests.pager_receiver import Answer, Receiver
    from tests.test_pager import settings_for

    _remote, work = repo
    receiver = Receiver().start()
    receiver.script(*[Answer(500)] * 3)
    pager = Pager(settings_for(receiver.url, tmp_path), dry_run=False)
    await pager.start()
    try:
        body = b'{"timestamp": 1.0, "injury_type": "unauthorized_directory", "affected_path": '
        body += b'"core/src/x/", "severity": "high", "recommended_action": "delete_directory", '
        body += b'"auto_heal": false, "note": "bad \\udc80 text"}'
        d, settler = delivery(body, max_attempts=5 if redeliverable else None)
        pub = await run_agent(work, [d], pager=pager)
        if redeliverable:
            assert settler.calls == ["nak:5"]  # the trigger waits for the redelivery
            assert pub.events() == []
            again, settler2 = delivery(body, attempt=2, max_attempts=5)
            pub = await run_agent(work, [again], pager=pager)
            assert settler2.calls == ["ack"]
        else:
            assert settler.calls == ["ack"]
            # In the durable outbox, unless its drain has already delivered it meanwhile.
            assert pager.pending + len(receiver.delivered) == 1
            assert await pager.flush()
        [event] = pub.events()
        assert event["metadata"]["injury"]["note"] == "bad \udc80 text"
        delivered = receiver.delivered
        assert len(delivered) == 1
        assert delivered[0]["payload"]["custom_details"]["injury"]["note"] == "bad \udc80 text"
    finally:
        await pager.aclose()
        receiver.stop()


async def test_a_signed_replay_with_a_lower_case_id_header_keeps_its_id(
    repo: tuple[Path, Path],
) -> None:
    """A captured signed injury replayed with `nats-msg-id` is the same injury (same id), so
    the healed-id record catches it after a restart; in one process it is a replay."""
    from auto_healer.signing import Verifier, signed_headers

    _remote, work = repo
    key = b"k" * 32
    body = _body(injury("core/src/random_stuff/"))
    headers = signed_headers(body, key, msg_id="inj-1")
    lower = {("nats-msg-id" if k == "Nats-Msg-Id" else k): v for k, v in headers.items()}
    first, s1 = delivery(body, headers)
    replay, s2 = delivery(body, lower)
    assert replay.msg_id == "inj-1"
    verifier = Verifier(key)
    pub = await run_agent(work, [first], verifier=verifier)
    pub2 = await run_agent(work, [replay], verifier=verifier)
    assert (s1.calls, s2.calls) == (["ack"], ["term"])
    [healed] = pub.events()
    [rejected] = pub2.events()
    assert healed["metadata"]["injury_id"] == "inj-1"
    assert rejected["metadata"]["injury_id"] == "inj-1"
    assert "replayed injury" in rejected["metadata"]["reason"]
