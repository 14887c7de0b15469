"""The next batch's path locks and healed-id reads overlap the push of the batch ahead: real
JetStream KV locks, a real bare remote whose pre-receive hook holds (or fails) the first push."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import BUCKET_HEALED, BUCKET_LOCKS, KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, git, injury, injury_trailers, remote_files
from tests.test_checkout import hook, other_clone_pushes

Repo = tuple[Path, Path]
# The first push waits for the test's GO (saying it is in the hook); with FAIL it is then
# refused once as a server-side ref lock would be, which git and the agent treat as transient.
HOLD = """#!/bin/sh
cat >/dev/null
touch {g}/IN_PUSH
n=0
while [ ! -e {g}/GO ]; do
  sleep 0.05; n=$((n+1))
  if [ $n -gt 600 ]; then echo "the test never opened the gate" >&2; exit 1; fi
done
"""  # a push that waits for the test's GO
GATE = (
    HOLD
    + """if [ -e {g}/FAIL ] && [ ! -e {g}/FAILED_ONCE ]; then
  touch {g}/FAILED_ONCE
  echo "error: cannot lock ref 'refs/heads/main'" >&2
  exit 1
fi
"""
)


@pytest.fixture
async def kv_healer(repo: Repo, nats_server: NatsServer) -> AsyncIterator[Healer]:
    """A healer of batches of two on the repo, with its locks and healed ids in a real KV."""
    _remote, work = repo
    nc = await nats.connect(nats_server.url)
    coord = await KvCoordinator.create(nc.jetstream(), owner="a", lock_ttl_s=30)
    books = load_playbooks(PLAYBOOKS)
    yield Healer(books, Checkout.open(work), dry_run=False, coordinator=coord, max_batch=2)
    await nc.drain()


def _gate(remote: Path, tmp_path: Path, *, fail: bool) -> Path:
    gate = tmp_path / "gate"
    gate.mkdir()
    if fail:
        (gate / "FAIL").touch()
    hook(remote, "pre-receive", GATE.format(g=gate))
    return gate


def _heals(healer: Healer, paths: list[str]) -> list[asyncio.Task[Outcome]]:
    """Queue the injuries in this order, straight to the batch (past the intake's reads)."""
    tasks = []
    for p in paths:
        parsed, book = healer.claimed(parse_injury(json.dumps(injury(p + "/")).encode()))
        assert book is not None
        heal = healer._batcher.heal(parsed, book, f"{healer.repo_key}|{p}")
        tasks.append(asyncio.ensure_future(heal))
    return tasks


async def _until(what: str, check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _locked_paths(healer: Healer, paths: list[str]) -> set[str]:
    """Which of `paths` have a path lock in the KV now."""
    from nats.js.errors import NoKeysError

    coord = healer.coordinator
    assert isinstance(coord, KvCoordinator)
    try:
        keys = set(await coord.locks.keys())
    except NoKeysError:
        keys = set()
    return {p for p in paths if kv_key(f"{healer.repo_key}|{p}") in keys}


async def _exists(path: Path) -> bool:
    return path.exists()


def _parent(remote: Path, sha: str) -> str:
    return git(remote, "rev-parse", f"{sha}^").strip()


async def test_an_injury_on_a_path_the_batch_ahead_holds_is_healed_once_after_its_push(
    repo: Repo, kv_healer: Healer, tmp_path: Path
) -> None:
    """While batch 1 (a, b) pushes, batch 2 holds c's lock; a second delivery of a waits for
    batch 1's locks and finds a's id recorded: one trailer, c committed on batch 1's commit."""
    remote, work = repo
    seed_dirs(work, ["a", "b", "c"])
    gate = _gate(remote, tmp_path, fail=False)
    a, b, c = (f"core/src/{n}" for n in "abc")
    tasks = _heals(kv_healer, [a, b, a, c])
    await _until("batch 1's push", lambda: _exists(gate / "IN_PUSH"))
    await _until("batch 2's lock on c", lambda: _lock_on(kv_healer, c))
    assert await _locked_paths(kv_healer, [a, b, c]) == {a, b, c}
    assert (work / c / "stray.py").exists()  # batch 2 has not touched the checkout
    assert not tasks[2].done()
    (gate / "GO").touch()
    first, second, again, third = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert [o.kind for o in (first, second, third)] == [Kind.HEALED] * 3, (first, third)
    assert first.commit and first.commit == second.commit and third.commit
    assert again.kind is Kind.SKIPPED
    assert again.reason == f"already healed by commit {first.commit[:12]}"
    assert injury_trailers(remote).count(first.injury.id if first.injury else "") == 1
    assert _parent(remote, third.commit) == first.commit
    assert not [f for f in remote_files(remote) if f.startswith((f"{a}/", f"{b}/", f"{c}/"))]


async def _lock_on(healer: Healer, path: str) -> bool:
    return path in await _locked_paths(healer, [path])


async def test_a_failed_push_leaves_the_next_batch_unapplied_and_both_heal(
    repo: Repo, kv_healer: Healer, tmp_path: Path
) -> None:
    """Batch 1's push is refused once while batch 2 holds its locks: batch 1 is restored and
    healed again, batch 2 then heals from the remote head; each trailer lands once."""
    remote, work = repo
    seed_dirs(work, ["a", "b", "c", "d"])
    gate = _gate(remote, tmp_path, fail=True)
    paths = [f"core/src/{n}" for n in "abcd"]
    tasks = _heals(kv_healer, paths)
    await _until("batch 1's push", lambda: _exists(gate / "IN_PUSH"))
    await _until("batch 2's locks", lambda: _both(kv_healer, paths[2:]))
    assert all((work / p / "stray.py").exists() for p in paths[2:])
    (gate / "GO").touch()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 4, [o.reason for o in outcomes]
    assert (gate / "FAILED_ONCE").exists()
    first, _, third, _ = outcomes
    assert first.attempts >= 2  # refused once, healed on the retry
    assert first.commit and third.commit and _parent(remote, third.commit) == first.commit
    trailers = injury_trailers(remote)
    ids = [o.injury.id for o in outcomes if o.injury]
    assert sorted(t for t in trailers if t in ids) == sorted(ids)
    assert not [f for f in remote_files(remote) if f.startswith(tuple(f"{p}/" for p in paths))]


async def _both(healer: Healer, paths: list[str]) -> bool:
    return await _locked_paths(healer, paths) == set(paths)


async def test_another_replica_waiting_on_a_held_path_reads_the_id_recorded_under_it(
    repo: Repo, kv_healer: Healer, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Replica 2 waits for a's lock while replica 1's batch pushes a: it reads a's healed id
    only once it holds the lock, after replica 1 recorded it (not "already healthy" by luck)."""
    remote, work = repo
    seed_dirs(work, ["a", "b"])
    gate = _gate(remote, tmp_path, fail=False)
    other = tmp_path / "other-replica"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    nc = await nats.connect(nats_server.url)
    coord = await KvCoordinator.create(nc.jetstream(), owner="b", lock_ttl_s=30, lock_wait_s=30)
    replica = Healer(
        load_playbooks(PLAYBOOKS), Checkout.open(other), dry_run=False, coordinator=coord
    )
    a, b = "core/src/a", "core/src/b"
    order: list[tuple[str, str]] = []  # every KV write, as the server saw them

    async def saw(msg: Any) -> None:
        order.append((msg.subject, (msg.headers or {}).get("KV-Operation", "PUT")))

    await nc.subscribe("$KV.>", cb=saw)
    await nc.flush()
    first, second = _heals(kv_healer, [a, b])
    await _until("replica 1's push", lambda: _exists(gate / "IN_PUSH"))
    [again] = _heals(replica, [a])
    await asyncio.sleep(0.3)  # replica 2 is waiting for a's lock by now
    assert not again.done()
    (gate / "GO").touch()
    healed, skipped = await asyncio.wait_for(asyncio.gather(first, again), 60)
    await nc.flush()
    await nc.drain()
    assert healed.injury is not None
    recorded = order.index((f"$KV.{BUCKET_HEALED}.{kv_key(healed.injury.id)}", "PUT"))
    let_go = order.index((f"$KV.{BUCKET_LOCKS}.{kv_key(f'{kv_healer.repo_key}|{a}')}", "DEL"))
    assert recorded < let_go  # a's id recorded before its lock was let go
    assert healed.kind is Kind.HEALED and healed.commit, healed.reason
    assert skipped.kind is Kind.SKIPPED
    assert skipped.reason == f"already healed by commit {healed.commit[:12]}"
    assert injury_trailers(remote).count(healed.injury.id) == 1
    assert (await second).kind is Kind.HEALED


async def test_a_batch_locked_before_our_push_began_starts_from_it_without_a_fetch(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locks all held before our last push began: its commit is the base, no fetch. Locks
    taken after it began: a full sync, which finds the commit another clone pushed since."""
    remote, work = repo
    seed_dirs(work, ["p0"])
    own = Checkout.clone(str(remote), tmp_path / "own")  # our own clone: no one else touches it
    healer = Healer(load_playbooks(PLAYBOOKS), own, dry_run=False)
    before = time.monotonic()
    [healed] = await asyncio.gather(*_heals(healer, ["core/src/p0"]))
    assert healed.kind is Kind.HEALED and healed.commit
    events = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(events))
    assert healer._batcher._sync(before) == healed.commit
    assert not events.exists() or '"fetch"' not in events.read_text()
    theirs = other_clone_pushes(tmp_path, remote)
    assert healer._batcher._sync(time.monotonic()) == theirs
    assert '"fetch"' in events.read_text()


async def test_a_single_heal_and_the_next_batch_on_one_path_do_not_wait_on_each_other(
    repo: Repo, kv_healer: Healer, tmp_path: Path
) -> None:
    """A heal outside the batches (`batch: false`) queued for the checkout on path x while the
    next batch takes x's lock: whichever holds the path first heals it, none waits forever."""
    remote, work = repo
    seed_dirs(work, ["a", "b", "c", "x"])
    gate = _gate(remote, tmp_path, fail=False)
    first = _heals(kv_healer, ["core/src/a", "core/src/b"])
    await _until("batch 1's push", lambda: _exists(gate / "IN_PUSH"))
    parsed, book = kv_healer.claimed(parse_injury(json.dumps(injury("core/src/x/")).encode()))
    assert book is not None
    single = asyncio.ensure_future(
        kv_healer._heal(parsed, book, f"{kv_healer.repo_key}|core/src/x")
    )
    await asyncio.sleep(0.1)  # it waits for the checkout batch 1 holds
    later = _heals(kv_healer, ["core/src/c", "core/src/x"])
    await asyncio.sleep(0.3)  # the next batch is taken and asks for its locks meanwhile
    (gate / "GO").touch()
    outcomes = await asyncio.wait_for(asyncio.gather(*first, single, *later), 30)
    assert [o.kind for o in outcomes[:4]] == [Kind.HEALED] * 4, [o.reason for o in outcomes]
    assert outcomes[4].kind in (Kind.HEALED, Kind.SKIPPED), outcomes[4].reason
    assert not [f for f in remote_files(remote) if f.startswith(("core/src/x/", "core/src/c/"))]
