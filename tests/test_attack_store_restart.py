"""The KV store (the nats-server) killed and restarted on its port and file store while a real
`auto-healer run --jetstream` holds batch 1's push in the remote's pre-receive hook and batch
2 holds its path locks: the agent lives on, no injury is lost, none is healed twice, no batch
pushes without its locks, and every message ends acked."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from auto_healer.embedded import NatsServer

from tests.agent_support import AgentProcess, Events, consumer_info, seed_dirs, wait_until
from tests.conftest import git, injury_trailers, remote_files
from tests.test_agent import _payload, _publish
from tests.test_attack_sigterm import PATHS, _by_path, _lock_count, _locks_at_least
from tests.test_batch_pipeline import GATE
from tests.test_checkout import hook

Repo = tuple[Path, Path]
# Locks expire 4 s after their last refresh; lost acks come back after 5 s.
ENV = {"MAX_BATCH": "2", "LOCK_TTL_S": "4", "ACK_WAIT_S": "5", "GRACE_PERIOD_S": "5"}


@pytest.mark.slow
@pytest.mark.parametrize("outage_s", [0.0, 6.0], ids=["blink", "past-the-lock-ttl"])
async def test_store_killed_and_restarted_while_batches_hold_locks(
    tmp_path: Path, repo: Repo, nats_server: NatsServer, outage_s: float
) -> None:
    """The server is SIGKILLed while batch 1 pushes and batch 2 holds its locks, and comes back
    on its port and store (at once, or after the locks' TTL with batch 1's push let through
    meanwhile): each injury is healed once, each message acked, the agent never stops."""
    remote, work = repo
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in PATHS])
    url = nats_server.url
    setup = AgentProcess(tmp_path, "setup", url, remote, jetstream=True, env=ENV).wait_ready()
    assert setup.terminate() == 0  # the stream, the consumer and the buckets (their TTL) exist
    await _publish(url, *[_payload(p + "/") for p in PATHS], jetstream=True)
    gate = tmp_path / "gate"
    gate.mkdir()
    hook(remote, "pre-receive", GATE.format(g=gate))
    agent = AgentProcess(tmp_path, "a", url, remote, jetstream=True, env=ENV).wait_ready()
    events = await Events().start(url)
    try:
        await wait_until(lambda: (gate / "IN_PUSH").exists(), 30, "batch 1's push")
        await wait_until(lambda: _locks_at_least(url, 3), 30, "batch 2's locks")
        nats_server.kill()
        if outage_s:
            (gate / "GO").touch()  # batch 1's push lands while the store is down
            await asyncio.sleep(outage_s)
        nats_server.start()
        (gate / "GO").touch()
        assert agent.proc.poll() is None, agent.logs()

        async def settled() -> bool:
            c = await consumer_info(url)
            return bool(c.num_pending + c.num_ack_pending == 0 and c.ack_floor.stream_seq == 4)

        await wait_until(settled, 60, "every message acked", seen=agent.logs)
        await wait_until(lambda: _no_locks(url), 10, "no lock")
        assert agent.proc.poll() is None, agent.logs()
        trailers = injury_trailers(remote)
        assert len(trailers) == len(set(trailers)) == 4, (trailers, agent.logs())
        assert not [f for f in remote_files(remote) if f.startswith(tuple(p + "/" for p in PATHS))]
        assert git(agent.checkout(), "status", "--porcelain", "--untracked-files=all") == ""
        # Events sent while the store was down never reach this subscriber; those that came
        # say each injury healed at most once, and a redelivery after a lost ack says by what.
        for path, seen in _by_path(events).items():
            kinds = [e["event_type"] for e in seen]
            assert kinds.count("injury_healed") <= 1, (path, kinds)
            for e in seen:
                reason = e["metadata"]["reason"]
                assert e["event_type"] == "injury_healed" or "already healed by" in reason, e
        assert agent.terminate() == 0, agent.logs()
    finally:
        await events.close()
        agent.kill()


async def _no_locks(url: str) -> bool:
    return await _lock_count(url) == 0


STAMPED = GATE.replace("cat >/dev/null\n", "cat >/dev/null\ndate +%s.%N >> {g}/PUSHES\n", 1)


@pytest.mark.slow
async def test_no_push_past_the_lock_ttl_while_the_store_is_down(
    tmp_path: Path, repo: Repo, nats_server: NatsServer
) -> None:
    """The server is SIGKILLed while batch 2 holds its locks (TTL 3 s); batch 1's push is let
    through 4 s later, the server still down: batch 2 must not push on locks the store has
    expired by then (its lease is lost), and heals once after the restart."""
    remote, work = repo
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in PATHS])
    url, ttl_s = nats_server.url, 3.0
    env = {**ENV, "LOCK_TTL_S": f"{ttl_s:g}"}
    setup = AgentProcess(tmp_path, "setup", url, remote, jetstream=True, env=env).wait_ready()
    assert setup.terminate() == 0  # the stream, the consumer and the buckets (their TTL) exist
    await _publish(url, *[_payload(p + "/") for p in PATHS], jetstream=True)
    gate = tmp_path / "gate"
    gate.mkdir()
    hook(remote, "pre-receive", STAMPED.format(g=gate))
    agent = AgentProcess(tmp_path, "a", url, remote, jetstream=True, env=env).wait_ready()
    try:
        await wait_until(lambda: (gate / "IN_PUSH").exists(), 30, "batch 1's push")
        await wait_until(lambda: _locks_at_least(url, 3), 30, "batch 2's locks")
        killed_at = time.time()
        nats_server.kill()  # no lock is refreshed from here on: each expires within the TTL
        await asyncio.sleep(ttl_s + 1.0)
        (gate / "GO").touch()
        await wait_until(lambda: len(injury_trailers(remote)) >= 1, 30, "batch 1's push")
        # Absence can't be awaited: batch 2 has the checkout now and would push within this.
        await asyncio.sleep(3.0)
        restarted_at = time.time()
        nats_server.start()
        pushes = [float(t) for t in (gate / "PUSHES").read_text().split()]
        late = [t - killed_at for t in pushes if killed_at + ttl_s < t < restarted_at]
        assert not late, f"pushed {late} s after the store went down: {agent.logs()}"

        async def settled() -> bool:
            c = await consumer_info(url)
            return bool(c.num_pending + c.num_ack_pending == 0 and c.ack_floor.stream_seq == 4)

        await wait_until(settled, 60, "every message acked", seen=agent.logs)
        trailers = injury_trailers(remote)
        assert len(trailers) == len(set(trailers)) == 4, (trailers, agent.logs())
        assert agent.terminate() == 0, agent.logs()
    finally:
        agent.kill()
