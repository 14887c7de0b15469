"""Attack on SIGTERM with a push in flight: a real `auto-healer run` (JetStream, batches of two)
is stopped while batch 1's push is held in the bare remote's pre-receive hook, and the push then
FAILS after the grace period (refused by policy, or lost to a teammate's push). Nothing may be
announced healed, the messages come back, the checkout is clean and the locks let go; the next
replica heals everything once. Real nats-server, real git."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess, Events, consumer_info, seed_dirs, wait_until
from tests.conftest import PLAYBOOKS, injury_trailers
from tests.test_agent import _payload, _publish
from tests.test_attack_sigterm import (
    PATHS,
    _assert_clean,
    _lock_count,
    _settled,
    next_replica_heals_the_rest,
)
from tests.test_batch_pipeline import GATE, HOLD
from tests.test_checkout import hook

Repo = tuple[Path, Path]
ENV = {"MAX_BATCH": "2", "GRACE_PERIOD_S": "1"}
HOLD_THEN = (
    HOLD
    + """echo "{why}" >&2
exit 1
"""
)
REFUSED = "policy: refused by a reviewer"
RACED = "error: cannot lock ref 'refs/heads/main'"  # what git says when the remote moved


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("why", [REFUSED, RACED], ids=["refused", "race-lost"])
async def test_a_push_that_fails_after_the_cut_off_is_handed_back(
    tmp_path: Path, repo: Repo, nats_server: NatsServer, why: str
) -> None:
    """SIGTERM while batch 1 pushes; the push fails after the grace period: no injury is
    answered (healed or failed), all four come back, the checkout is clean, the locks gone."""
    remote, work = repo
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in PATHS])
    url = nats_server.url
    setup = AgentProcess(tmp_path, "setup", url, remote, jetstream=True).wait_ready()
    assert setup.terminate() == 0  # the stream and the durable consumer exist now
    before = injury_trailers(remote)
    gate = tmp_path / "gate"
    gate.mkdir()
    await _publish(url, *(_payload(p + "/") for p in PATHS), jetstream=True)
    hook(remote, "pre-receive", HOLD_THEN.format(g=gate, why=why))
    events = await Events().start(url)
    try:
        agent = AgentProcess(tmp_path, "a", url, remote, jetstream=True, env=ENV).wait_ready()
        await wait_until(lambda: (gate / "IN_PUSH").exists(), 30, "batch 1's push", seen=agent.logs)
        agent.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: "heals_cut_off" in agent.logs(), 30, "the grace period to end")
        agent.proc.send_signal(signal.SIGTERM)  # the operator, impatient, asks again
        (gate / "GO").touch()
        assert agent.proc.wait(60) == 0, agent.logs()
        _assert_clean(agent)
        assert await _lock_count(url) == 0
        assert injury_trailers(remote) == before
        time.sleep(0.3)
        assert events.items == [], events.seen()  # nothing answered by the stopping replica
        c = await consumer_info(url)
        assert c.num_ack_pending + c.num_pending == 4, agent.logs()  # all handed back

        (remote / "hooks" / "pre-receive").unlink()
        await next_replica_heals_the_rest(tmp_path, url, remote, events)
        trailers = injury_trailers(remote)
        assert len(trailers) == 4 and len(set(trailers)) == 4, trailers
    finally:
        await events.close()


def _books(tmp_path: Path) -> Path:
    """The playbooks plus a heal-branch twin of the deleter (injury_type branch_dir)."""
    books = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, books)
    text = (books / "unauthorized_directory.yaml").read_text()
    own = text.replace("name: unauthorized_directory", "name: branch_dir")
    own = own.replace("injury_type: unauthorized_directory", "injury_type: branch_dir")
    (books / "branch_dir.yaml").write_text(own.replace("push_to: branch", "push_to: heal-branch"))
    return books


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("injury_type", "max_batch"),
    [("branch_dir", "200"), ("unauthorized_directory", "1")],
    ids=["heal-branch", "max-batch-1"],
)
async def test_a_single_heal_whose_push_lands_after_the_cut_off_is_answered(
    tmp_path: Path, repo: Repo, nats_server: NatsServer, injury_type: str, max_batch: str
) -> None:
    """A heal outside the batches (a heal-branch playbook, or MAX_BATCH=1) whose push lands
    after the grace period is announced healed and acked by the stopping replica, as a batch's
    is: redelivered, it would be "already proposed"/"already healthy" and its heal never said."""
    remote, work = repo
    seed_dirs(work, ["a"])
    url = nats_server.url
    books = _books(tmp_path)
    setup = AgentProcess(tmp_path, "setup", url, remote, jetstream=True, playbooks=books)
    assert setup.wait_ready().terminate() == 0
    gate = tmp_path / "gate"
    gate.mkdir()
    hook(remote, "pre-receive", GATE.format(g=gate))
    await _publish(url, _payload("core/src/a/", injury_type=injury_type), jetstream=True)
    events = await Events().start(url)
    env = {**ENV, "MAX_BATCH": max_batch}
    try:
        agent = AgentProcess(tmp_path, "a", url, remote, jetstream=True, playbooks=books, env=env)
        agent.wait_ready()
        await wait_until(lambda: (gate / "IN_PUSH").exists(), 30, "the push", seen=agent.logs)
        agent.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: "heals_cut_off" in agent.logs(), 30, "the grace period to end")
        (gate / "GO").touch()
        assert agent.proc.wait(60) == 0, agent.logs()
        _assert_clean(agent)
        await events.wait_for(1, timeout_s=5)
        assert [e["event_type"] for e in events.items] == ["injury_healed"], events.seen()
        await wait_until(lambda: _settled(url, 1), 10, "the message acked", seen=agent.logs)
    finally:
        await events.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_push_that_hangs_past_the_cut_off_says_why_shutdown_waits(
    tmp_path: Path, repo: Repo, nats_server: NatsServer
) -> None:
    """The push held in the hook past the grace period: while the stopping replica waits for
    it, its log says so again and again (at 3 a.m. `heals_cut_off` then silence reads as a
    hang); once it lands the replica answers it and exits."""
    remote, work = repo
    seed_dirs(work, ["a"])
    url = nats_server.url
    gate = tmp_path / "gate"
    gate.mkdir()
    hook(remote, "pre-receive", GATE.format(g=gate))
    agent = AgentProcess(tmp_path, "a", url, remote, jetstream=False, env=ENV).wait_ready()
    await _publish(url, _payload("core/src/a/"))
    await wait_until(lambda: (gate / "IN_PUSH").exists(), 30, "the push", seen=agent.logs)
    agent.proc.send_signal(signal.SIGTERM)
    await wait_until(
        lambda: "waiting_for_cut_off_heals" in agent.logs(),
        15,
        "a word on the wait",
        seen=agent.logs,
    )
    assert agent.proc.poll() is None  # still waiting for the push
    (gate / "GO").touch()
    assert agent.proc.wait(60) == 0, agent.logs()
    assert '"outcome":"healed"' in agent.logs(), agent.logs()
