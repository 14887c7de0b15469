"""Approvals on a real nats-server and real git remotes: signed decisions, `auto_heal: false`
injuries approved, and a heal left half-done by a dead replica taken over."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from auto_healer import approval_flow, approvals, control_ops, controls
from auto_healer.embedded import NatsServer
from auto_healer.kvcell import KvCell
from auto_healer.outcomes import Kind
from auto_healer.playbooks import load_playbooks

from tests.agent_support import remote_tree, seed_dirs, wait_until
from tests.approval_support import Replica, approval_playbooks, parsed

pytestmark = pytest.mark.timeout(90)
KEY = b"hive-signing-key"


def _there(remote: Path, name: str) -> bool:
    return any(f"/{name}/" in p for p in remote_tree(remote))


class _Silent:
    """A connection for the control's announcement, which these tests do not read."""

    async def publish(self, subject: str, data: bytes) -> None:
        return None

    async def flush(self, timeout: float) -> None:
        return None


async def test_a_replica_with_the_key_ignores_forged_decisions_and_heals_a_signed_one(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Unsigned, wrongly signed, or altered after signing: back to pending, paged as a forged
    decision ignored; `approve` from a shell with INJURY_SIGNING_KEY heals it once."""
    remote, work = repo
    seed_dirs(work, ["wanted", "other"])
    books = approval_playbooks(tmp_path)
    async with Replica(tmp_path, "a", nats_server.url, remote, playbooks=books,
                       signing_key=KEY) as a:  # fmt: skip
        ask = parsed("core/src/wanted/")
        held = await a.handle(ask)
        assert (held.kind, held.kept_aside) == (Kind.HELD, True)

        async def forged(n: int) -> None:
            await wait_until(lambda: len(a.announced) >= n, 15, f"forged decision {n} ignored")
            ignored = a.announced[n - 1]
            assert (ignored.kind, ignored.kept_aside) == (Kind.HELD, True)
            assert "a forged decision was ignored" in ignored.reason
            assert f"auto-healer approve {ask.id}" in ignored.reason
            await a.wait_state(ask.id, "pending")

        await approvals.decide_request(a.cells, ask.id, approve=True, by="mallory")
        await forged(1)
        assert "unsigned" in a.announced[0].reason
        await approvals.decide_request(
            a.cells, ask.id, approve=True, by="mallory", signing_key=b"another key"
        )
        await forged(2)
        assert "its signature does not hold" in a.announced[1].reason
        # A signed approval whose request is then pointed at another directory.
        found = await approvals.read(a.cells, ask.id)
        assert found is not None
        decided = replace(found[0], state="approved", by="erin", decided_at=time.time(),
                          decided_rev=found[1])  # fmt: skip
        other = parsed("core/src/other/").model_dump(mode="json")
        altered = replace(approvals.sign_decision(decided, KEY), parsed={**other, "id": ask.id})
        assert await a.cells.swap(approvals.approval_key(ask.id), altered.dump(), found[1])
        await forged(3)
        assert _there(remote, "wanted") and _there(remote, "other")
        # A forged request's content is not ours to trust: put back what the replica asked.
        found = await approvals.read(a.cells, ask.id)
        assert found is not None
        restored = replace(found[0], parsed=ask.model_dump(mode="json"))
        assert await a.cells.swap(approvals.approval_key(ask.id), restored.dump(), found[1])

        done = subprocess.run(
            [sys.executable, "-m", "auto_healer", "approve", ask.id, "--by", "erin",
             "--nats-url", nats_server.url],
            env={**os.environ, "INJURY_SIGNING_KEY": KEY.decode()},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "approved by erin (signed)" in done.stdout
        await wait_until(lambda: len(a.announced) >= 4, 30, "the approved heal")
        healed = a.announced[3]
        assert healed.kind is Kind.HEALED and "approved by erin" in healed.reason
        await a.wait_state(ask.id, "done")
        assert not _there(remote, "wanted") and _there(remote, "other")


async def test_an_auto_heal_false_injury_a_playbook_heals_is_approved_then_healed(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """`auto_heal: false` with a healing playbook: escalated as an approval request, even while
    paused; approved, it heals after the resume. No healing playbook: escalated as ever."""
    remote, work = repo
    seed_dirs(work, ["asked"])
    books = approval_playbooks(tmp_path, extra="")
    (books / "disk_full.yaml").write_text(
        "name: disk_full\nmatch:\n  injury_type: disk_full\nsteps:\n  - action: escalate\n"
    )
    async with Replica(tmp_path, "a", nats_server.url, remote, playbooks=books) as a:
        await controls.pause(a.cells, by="ops", reason="freeze", playbook=None)
        await wait_until(lambda: a.guard.controls.paused() is not None, 5, "the pause")
        ask = parsed("core/src/asked/", auto_heal=False)
        held = await a.handle(ask)
        assert (held.kind, held.kept_aside) == (Kind.ESCALATED, True), held.reason
        assert "auto_heal is false: a human must decide; awaiting approval" in held.reason
        assert "delete_directory on core/src/asked" in held.reason
        assert f"auto-healer approve {ask.id}" in held.reason
        plain = await a.handle(parsed("core/src/x/", injury_type="disk_full", auto_heal=False))
        assert (plain.kind, plain.kept_aside) == (Kind.ESCALATED, False)
        unsafe = await a.handle(parsed("docs/guide/", auto_heal=False))  # protected: no heal
        assert (unsafe.kind, unsafe.kept_aside) == (Kind.ESCALATED, False)

        await control_ops.decide(a.cells, _Silent(), ask.id, approve=True, by="erin")
        await asyncio.sleep(1.5)  # absence: an approval must wait for the resume
        assert (await a.request(ask.id)).state == "approved" and _there(remote, "asked")
        await controls.resume(a.cells, playbook=None)
        await wait_until(lambda: a.announced, 30, "the approved heal")
        assert a.announced[0].kind is Kind.HEALED, a.announced[0].reason
        assert not _there(remote, "asked")


async def test_a_heal_left_by_a_dead_replica_is_taken_over_once(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """A request a replica took to heal and then died with stays `healing`; after
    APPROVAL_RECLAIM_AFTER_S one of the two live replicas takes it over and heals it once."""
    remote, work = repo
    seed_dirs(work, ["stuck"])
    books = approval_playbooks(tmp_path)
    nc = await nats.connect(nats_server.url)  # a replica that took the heal, then died
    try:
        cells = await KvCell.open(nc.jetstream(), controls.BUCKET_CONTROLS)
        ask = parsed("core/src/stuck/")
        playbook = load_playbooks(books).match(ask.injury)
        assert playbook is not None
        assert (await approval_flow.ask(cells, ask, playbook)).kind is Kind.HELD
        await approvals.decide_request(cells, ask.id, approve=True, by="erin")
        assert await approvals.move(cells, ask.id, frm=("approved",), to="healing", owner="dead")
    finally:
        await nc.close()
    replicas = [
        Replica(tmp_path, n, nats_server.url, remote, playbooks=books, reclaim_after_s=2.0)
        for n in ("b", "c")
    ]
    async with replicas[0] as b, replicas[1] as c:
        await asyncio.sleep(1.0)  # absence: not before the reclaim timeout
        assert (await b.request(ask.id)).owner == "dead" and _there(remote, "stuck")
        await b.wait_state(ask.id, "done", timeout_s=30)
        await asyncio.sleep(1.5)  # absence: the other replica must not heal it again
        outcomes = b.announced + c.announced
        assert [o.kind for o in outcomes] == [Kind.HEALED], [o.reason for o in outcomes]
        assert (await b.request(ask.id)).owner in ("b", "c")
        assert not _there(remote, "stuck")
