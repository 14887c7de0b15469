"""SIGTERM to a real `auto-healer run` while batch 1 pushes (held in the bare remote's
pre-receive hook past the grace period) and batch 2 holds its KV path locks: what landed is
announced and recorded once, nothing is lost or healed twice, the checkout is left clean and
the locks let go. Core NATS and JetStream, a real nats-server."""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.coordination import BUCKET_LOCKS
from auto_healer.embedded import NatsServer
from nats.js.errors import NoKeysError

from tests.agent_support import AgentProcess, Events, consumer_info, seed_dirs, wait_until
from tests.conftest import git, injury_trailers
from tests.test_agent import _payload, _publish
from tests.test_batch_pipeline import GATE
from tests.test_checkout import hook

Repo = tuple[Path, Path]
PATHS = [f"core/src/{n}" for n in "abcd"]
ENV = {"MAX_BATCH": "2", "GRACE_PERIOD_S": "1"}


async def _lock_count(url: str) -> int:
    """How many path locks the KV holds now (read on a connection of the test's own)."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(BUCKET_LOCKS)
        try:
            return len(await kv.keys())
        except NoKeysError:
            return 0
    finally:
        await nc.drain()


def _by_path(events: Events) -> dict[str, list[dict[str, Any]]]:
    """The outcome events of each affected path."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events.items:
        injury = e["metadata"].get("injury") or {}
        out[str(injury.get("affected_path", "")).rstrip("/")].append(e)
    return out


async def _cut_off_while_pushing(
    tmp_path: Path, remote: Path, url: str, *, jetstream: bool, publish_first: bool
) -> tuple[AgentProcess, Path]:
    """An agent in batches of two; SIGTERM once batch 1 is in the remote's hook and batch 2
    holds its locks; the hook lets the push through only after the grace period has run out."""
    gate = tmp_path / "gate"
    gate.mkdir()
    payloads = [_payload(p + "/") for p in PATHS]
    if publish_first:  # all four in the stream before the agent's first fetch
        await _publish(url, *payloads, jetstream=True)
    hook(remote, "pre-receive", GATE.format(g=gate))
    agent = AgentProcess(tmp_path, "a", url, remote, jetstream=jetstream, env=ENV).wait_ready()
    if not publish_first:
        await _publish(url, *payloads, jetstream=jetstream)
    await wait_until(lambda: (gate / "IN_PUSH").exists(), 30, "batch 1's push", seen=agent.logs)
    # batches of two: three locks are batch 1's and batch 2's
    await wait_until(lambda: _locks_at_least(url, 3), 30, "batch 2's locks", seen=agent.logs)
    agent.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: "heals_cut_off" in agent.logs(), 30, "the grace period to end")
    (gate / "GO").touch()
    assert agent.proc.wait(60) == 0, agent.logs()
    return agent, gate


async def _locks_at_least(url: str, count: int) -> bool:
    return await _lock_count(url) >= count


def _assert_clean(agent: AgentProcess) -> None:
    checkout = agent.checkout()
    assert git(checkout, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.slow
async def test_sigterm_while_a_batch_pushes_jetstream(
    tmp_path: Path, repo: Repo, nats_server: NatsServer
) -> None:
    """JetStream: the push cut off by the grace period lands and its injuries are announced
    healed and acked by the stopping replica; batch 2's come back and heal on the next one."""
    remote, work = repo
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in PATHS])
    url = nats_server.url
    setup = AgentProcess(tmp_path, "setup", url, remote, jetstream=True).wait_ready()
    assert setup.terminate() == 0  # the stream and the durable consumer exist now
    events = await Events().start(url)
    try:
        agent, _gate = await _cut_off_while_pushing(
            tmp_path, remote, url, jetstream=True, publish_first=True
        )
        _assert_clean(agent)
        assert await _lock_count(url) == 0  # let go of, not left to expire
        landed = injury_trailers(remote)
        assert landed, agent.logs()  # batch 1's push went through after the grace period
        await events.wait_for(len(landed), timeout_s=5)
        stopped_with = sorted((e["event_type"], e["metadata"]["injury_id"]) for e in events.items)
        assert stopped_with == sorted(("injury_healed", i) for i in landed), agent.logs()
        c = await consumer_info(url)
        assert c.num_ack_pending + c.num_pending == 4 - len(landed)  # handed back

        await next_replica_heals_the_rest(tmp_path, url, remote, events)
        trailers = injury_trailers(remote)
        assert len(trailers) == 4 and len(set(trailers)) == 4, trailers
    finally:
        await events.close()


async def next_replica_heals_the_rest(
    tmp_path: Path, url: str, remote: Path, events: Events
) -> None:
    """A second replica takes what was handed back: each path ends with one healed event and
    every message is acked."""
    nxt = AgentProcess(tmp_path, "b", url, remote, jetstream=True).wait_ready()
    try:
        await events.wait_for(4, timeout_s=60)
        await wait_until(
            lambda: _settled(url), 30, "every message acked", seen=lambda: events.seen()
        )
    finally:
        nxt.kill()
    by_path = _by_path(events)
    for path in PATHS:
        kinds = [e["event_type"] for e in by_path[path]]
        assert kinds == ["injury_healed"], (path, kinds)


async def _settled(url: str, last: int = 4) -> bool:
    """Every message up to stream sequence `last` settled, none pending."""
    c = await consumer_info(url)
    return bool(c.num_ack_pending + c.num_pending == 0 and c.ack_floor.stream_seq == last)


@pytest.mark.slow
async def test_sigterm_while_a_batch_pushes_core(
    tmp_path: Path, repo: Repo, nats_server: NatsServer
) -> None:
    """Core NATS: the push cut off by the grace period lands and every injury it healed is
    announced healed once; batch 2's are cut off (core cannot redeliver) and nothing of them
    lands."""
    remote, work = repo
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in PATHS])
    url = nats_server.url
    events = await Events().start(url)
    try:
        agent, _gate = await _cut_off_while_pushing(
            tmp_path, remote, url, jetstream=False, publish_first=False
        )
        _assert_clean(agent)
        assert await _lock_count(url) == 0
        landed = injury_trailers(remote)
        assert landed, agent.logs()
        healed = events.of_type("injury_healed")
        assert sorted(e["metadata"]["injury_id"] for e in healed) == sorted(landed), (
            events.seen(),
            agent.logs(),
        )
        assert len(events.items) == len(landed), events.seen()
    finally:
        await events.close()
