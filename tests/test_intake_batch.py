"""The agent's batch path: what arrives together is decided together, a heal never holds it up,
and every message is still decided, announced and settled exactly once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
from auto_healer.embedded import NatsServer

from tests.conftest import injury, remote_files
from tests.inprocess import core_agent, delivery, run_agent


async def test_a_heal_in_flight_does_not_hold_up_what_is_answered_at_once(
    repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Core NATS, one slot taken by a real heal: an injury no playbook claims, published after
    it, is escalated and announced before the heal ends (it used to wait for the slot)."""
    remote, work = repo
    nc = await nats.connect(nats_server.url)
    agent, checkout, publisher, _metrics = core_agent(nc, work, grace_period_s=30)
    runner = asyncio.create_task(agent.run(install_signals=False))
    try:
        async with asyncio.timeout(30):
            while not agent.subscribed:
                await asyncio.sleep(0.01)
            heal = injury("core/src/random_stuff/")
            nobody = injury("elsewhere/", injury_type="nobody_claims_this")
            for payload in (heal, nobody):
                await nc.publish("aura.hive.injury", json.dumps(payload).encode())
            await nc.flush()
            while len(publisher.events()) < 2:
                await asyncio.sleep(0.01)
    finally:
        agent.stopping.set()
        await runner
        await nc.close()
        checkout.close()
    assert [e["event_type"] for e in publisher.events()] == ["injury_escalated", "injury_healed"]
    assert not any(f.startswith("core/src/random_stuff/") for f in remote_files(remote))


async def test_a_mixed_batch_is_settled_and_announced_once_per_message(
    repo: tuple[Path, Path],
) -> None:
    """Plans, duplicates, refusals, garbage and strays together (JetStream-like, dry-run): each
    message one settlement and one event, nothing dead-lettered by a dry-run, plans as ever."""
    _remote, work = repo
    bodies = [
        json.dumps(injury("core/src/random_stuff/")).encode(),  # planned
        json.dumps(injury("core/src/random_stuff/")).encode(),  # the same injury again
        json.dumps(injury("core/src/absent/")).encode(),  # nothing to heal
        json.dumps(injury(".git/hooks")).encode(),  # protected: refused
        json.dumps(injury("x/", injury_type="nobody_claims_this")).encode(),  # escalated
        json.dumps(injury("core/src/random_stuff/", auto_heal=False)).encode(),  # escalated
        b"not json",  # rejected
    ]
    pairs = [delivery(b, max_attempts=5) for b in bodies]
    pub = await run_agent(work, [d for d, _s in pairs], dry_run=True)
    assert [s.calls for _d, s in pairs] == [["ack"]] * len(bodies)
    kinds = sorted(e["metadata"]["outcome"] for e in pub.events())
    assert kinds == sorted(
        ["planned", "planned", "skipped", "rejected", "escalated", "escalated", "rejected"]
    )
    assert pub.dead_letters() == []
    planned = [e for e in pub.events() if e["metadata"]["outcome"] == "planned"]
    assert all(e["metadata"]["attempts"] == 1 for e in planned)
    assert "would commit on" in planned[0]["metadata"]["reason"]


async def test_an_auto_heal_false_injury_reaches_the_controls_through_the_agent(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A real replica's batch path leaves a claimed `auto_heal: false` injury to the operator
    controls: it is escalated as an approval request (with the approve command), not plainly."""
    from tests.agent_support import AgentProcess, Events, seed_dirs, wait_until

    remote, work = repo
    seed_dirs(work, ["asked"])
    events = await Events().start(nats_server.url)
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True).wait_ready()
    try:
        nc = await nats.connect(nats_server.url)
        body = json.dumps(injury("core/src/asked/", auto_heal=False)).encode()
        await nc.jetstream().publish("aura.hive.injury", body)
        await nc.close()
        await wait_until(
            lambda: [e for e in events.items if e["event_type"].startswith("injury_")],
            30,
            "the injury's outcome event",
            seen=events.seen,
        )
    finally:
        agent.terminate()
        await events.close()
    [event] = [e for e in events.items if e["event_type"].startswith("injury_")]
    reason = event["metadata"]["reason"]
    assert "awaiting approval" in reason and "auto-healer approve" in reason, reason
