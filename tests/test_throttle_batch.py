"""The storm throttle of batched heals, claimed under the path lock after the healed-id read
that decides: a redelivered healed injury never claims a window, a storm on one path heals
once (in one batch, split across batches, across two replicas), a failed heal lets go of its
window, nothing heals twice and every injury gets one outcome. Real JetStream KV, real git
repositories with a bare remote."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import ParsedInjury, parse_injury
from auto_healer.coordination import KvCoordinator, kv_key
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.pathlocks import let_go_by
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, injury, injury_trailers
from tests.test_batch_pipeline import HOLD
from tests.test_checkout import hook

Repo = tuple[Path, Path]
P = "core/src/p"
THROTTLED = f"throttled: unauthorized_directory at {P}/ was handled within the last"
REFUSE_P = """#!/bin/sh
while read old new ref; do
  if git diff --name-only "$old" "$new" | grep -q '^core/src/p/'; then
    echo "policy: core/src/p may not be removed" >&2
    exit 1
  fi
done
"""
Make = Callable[..., Awaitable[Healer]]


@pytest.fixture
async def make(repo: Repo, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Make]:
    """Healers on one KV (each its own connection): `window_s` for unauthorized_directory,
    `clone` a clone of its own (else the seeded checkout), `max_batch`, `lock_wait_s`."""
    conns: list[Any] = []

    async def healer(
        name: str = "a",
        *,
        window_s: float = 60.0,
        clone: bool = False,
        max_batch: int = 200,
        lock_wait_s: float = 0.0,
    ) -> Healer:
        books = tmp_path / f"playbooks-{name}"
        shutil.copytree(PLAYBOOKS, books)
        book = books / "unauthorized_directory.yaml"
        book.write_text(book.read_text().replace("window_s: 60", f"window_s: {window_s}"))
        nc = await nats.connect(nats_server.url)
        conns.append(nc)
        coord = await KvCoordinator.create(
            nc.jetstream(), owner=name, lock_ttl_s=30, lock_wait_s=lock_wait_s
        )
        coord.let_go = let_go_by(nc.publish)
        co = Checkout.clone(str(repo[0]), tmp_path / name) if clone else Checkout.open(repo[1])
        books_ = load_playbooks(books)
        return Healer(books_, co, dry_run=False, coordinator=coord, max_batch=max_batch)

    yield healer
    for nc in conns:
        await nc.drain()


def _injury(n: int, path: str = P) -> ParsedInjury:
    """An injury on `path`; each `n` its own id (another audit's timestamp)."""
    return parse_injury(json.dumps(injury(path + "/", timestamp=1735920000.0 + n)).encode())


async def _until(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _answered(h: Healer, parsed: ParsedInjury) -> Outcome:
    """Handled, and redelivered at once while it fails for a busy path (the other replica)."""
    for _ in range(3000):
        out = await h.handle(parsed)
        if not (out.kind is Kind.FAILED and out.retryable):
            return out
        await asyncio.sleep(0.005)
    raise AssertionError(f"still busy: {out.reason}")


def _one_heal(outcomes: list[Outcome], remote: Path) -> Outcome:
    """Exactly one heal, every other injury its own "throttled" outcome, one trailer."""
    healed = [o for o in outcomes if o.kind is Kind.HEALED]
    assert len(healed) == 1, [o.reason for o in outcomes]
    rest = [o for o in outcomes if o is not healed[0]]
    assert all(o.kind is Kind.SKIPPED and o.reason.startswith(THROTTLED) for o in rest), [
        o.reason for o in rest
    ]
    ids = [o.injury.id for o in outcomes if o.injury]
    assert len(set(ids)) == len(outcomes)  # each injury answered, each once
    trailers = injury_trailers(remote)
    assert [i for i in ids if i in trailers] == [healed[0].injury.id if healed[0].injury else ""]
    return healed[0]


async def test_a_redelivery_during_its_own_push_claims_no_window_for_after_it(
    repo: Repo, make: Make, tmp_path: Path
) -> None:
    """X's push outlasts its window; X redelivered then (not healed yet at intake) waits for
    the path and is "already healed"; a new injury Y on the path right after is healed, not
    throttled by a window the redelivery claimed (main claimed it at intake)."""
    remote, work = repo
    window_s = 1.5
    healer = await make(window_s=window_s)
    seed_dirs(work, ["p"])
    gate = tmp_path / "gate"
    gate.mkdir()
    hook(remote, "pre-receive", HOLD.format(g=gate))
    x = _injury(0)
    first = asyncio.ensure_future(healer.handle(x))
    await _until("X's push", (gate / "IN_PUSH").exists)
    await asyncio.sleep(window_s + 0.2)  # X's window is over (the KV entry and our cache)
    again = asyncio.ensure_future(healer.handle(x))
    await _until("the redelivery queued", lambda: len(healer._batcher._queue._queue) == 1)
    (gate / "GO").touch()
    done, redone = await asyncio.wait_for(asyncio.gather(first, again), 30)
    assert done.kind is Kind.HEALED and done.commit, done.reason
    assert redone.reason == f"already healed by commit {done.commit[:12]}"
    (remote / "hooks" / "pre-receive").unlink()
    seed_dirs(work, ["p"])  # the directory is back: a genuinely new injury, inside the window
    fresh = await healer.handle(_injury(1))
    assert fresh.kind is Kind.HEALED, fresh.reason
    assert injury_trailers(remote)[:2] == [_injury(1).id, x.id]


async def test_a_healed_injury_redelivered_beside_a_new_one_in_one_batch(
    repo: Repo, make: Make
) -> None:
    """After X's window, X redelivered and a new Y on its path reach one batch together
    (X first): X is "already healed" and claims nothing, Y is healed."""
    remote, work = repo
    healer = await make(window_s=1.0)
    seed_dirs(work, ["p"])
    x, y = _injury(0), _injury(1)
    first = await healer.handle(x)
    assert first.kind is Kind.HEALED and first.commit, first.reason
    await asyncio.sleep(1.3)
    seed_dirs(work, ["p"])
    again, fresh = await asyncio.gather(healer.handle(x), healer.handle(y))
    assert again.reason == f"already healed by commit {first.commit[:12]}"
    assert fresh.kind is Kind.HEALED, fresh.reason
    assert injury_trailers(remote).count(x.id) == 1 and y.id in injury_trailers(remote)


async def test_a_storm_on_one_path_in_one_batch_heals_once(repo: Repo, make: Make) -> None:
    """Eight distinct injuries on one path (and a second delivery of the first) in one batch:
    the first heals, the second delivery is "already healed", the seven others throttled."""
    remote, work = repo
    healer = await make()
    seed_dirs(work, ["p"])
    storm = [_injury(n) for n in range(8)]
    outcomes = await asyncio.gather(*(healer.handle(p) for p in [*storm, storm[0]]))
    healed = _one_heal(outcomes[:-1], remote)
    assert healed is outcomes[0]
    assert outcomes[-1].reason == f"already healed by commit {(healed.commit or '')[:12]}"


async def test_a_storm_split_across_batches_heals_once(repo: Repo, make: Make) -> None:
    """Batches of two: a storm of seven on one path goes through four batches, one heal."""
    remote, work = repo
    healer = await make(max_batch=2)
    seed_dirs(work, ["p", "q"])
    storm = [_injury(n) for n in range(7)]
    other = _injury(0, "core/src/q")
    outcomes = await asyncio.gather(*(healer.handle(p) for p in [*storm, other]))
    _one_heal(outcomes[:-1], remote)
    assert outcomes[-1].kind is Kind.HEALED, outcomes[-1].reason  # its own path, its own window


@pytest.mark.timeout(120)
async def test_a_storm_split_across_two_replicas_heals_once(repo: Repo, make: Make) -> None:
    """Ten injuries on one path, five to each replica at once, each redelivered while its
    path is busy on the other: one heal in all, every other injury throttled."""
    remote, work = repo
    a, b = await make("a", clone=True), await make("b", clone=True)
    seed_dirs(work, ["p"])
    storm = [_injury(n) for n in range(10)]
    outcomes = await asyncio.gather(*(_answered((a, b)[n % 2], p) for n, p in enumerate(storm)))
    _one_heal(list(outcomes), remote)


@pytest.mark.timeout(120)
async def test_replicas_waiting_for_the_path_lock_throttle_behind_the_heal(
    repo: Repo, make: Make
) -> None:
    """Replicas that wait for a busy path (LOCK_WAIT_S) instead of failing: a storm of six
    split between them, one heal."""
    remote, work = repo
    a = await make("a", clone=True, lock_wait_s=20)
    b = await make("b", clone=True, lock_wait_s=20)
    seed_dirs(work, ["p"])
    storm = [_injury(n) for n in range(6)]
    outcomes = await asyncio.gather(*((a, b)[n % 2].handle(p) for n, p in enumerate(storm)))
    _one_heal(list(outcomes), remote)


async def test_a_failed_heal_lets_go_of_its_window(repo: Repo, make: Make) -> None:
    """X's push is refused (a policy hook): X fails and its window is let go, so a new
    injury on the path inside the window heals; a second failed X in the same batch too."""
    remote, work = repo
    healer = await make()
    seed_dirs(work, ["p"])
    hook(remote, "pre-receive", REFUSE_P)
    x = _injury(0)
    failed, twin = await asyncio.gather(healer.handle(x), healer.handle(x))
    assert failed.kind is Kind.FAILED and twin.kind is Kind.FAILED, failed.reason
    coord = healer.coordinator
    assert isinstance(coord, KvCoordinator)
    assert await _window_holder(coord, healer) is None
    (remote / "hooks" / "pre-receive").unlink()
    fresh = await healer.handle(_injury(1))
    assert fresh.kind is Kind.HEALED, fresh.reason
    assert x.id not in injury_trailers(remote)


async def test_a_path_lock_that_fails_keeps_the_other_replicas_window(
    repo: Repo, make: Make, tmp_path: Path
) -> None:
    """Replica a heals X (its push held); Y on replica b finds the path busy and fails: X's
    window stays X's, and Y redelivered after X's heal is throttled, not healed."""
    remote, work = repo
    a, b = await make("a", clone=True), await make("b", clone=True)
    seed_dirs(work, ["p"])
    gate = tmp_path / "gate"
    gate.mkdir()
    hook(remote, "pre-receive", HOLD.format(g=gate))
    x, y = _injury(0), _injury(1)
    first = asyncio.ensure_future(a.handle(x))
    await _until("X's push", (gate / "IN_PUSH").exists)
    busy = await b.handle(y)
    assert (busy.kind is Kind.FAILED and busy.retryable) or busy.reason.startswith(THROTTLED)
    assert isinstance(a.coordinator, KvCoordinator)
    assert await _window_holder(a.coordinator, a) == x.id
    (gate / "GO").touch()
    assert (await asyncio.wait_for(first, 30)).kind is Kind.HEALED
    later = await _answered(b, y)
    assert later.reason.startswith(THROTTLED), later.reason
    assert y.id not in injury_trailers(remote)


async def test_a_fresh_throttled_batched_injury_reads_its_healed_id_once(
    repo: Repo, make: Make, nats_server: NatsServer
) -> None:
    """A burst of 20 fresh injuries of a throttled batched playbook: one healed-id read each
    (under the path lock), none at intake: the JetStream API sees about 20 requests, not 40."""
    _remote, work = repo
    names = [f"c{i:02d}" for i in range(20)]
    seed_dirs(work, names)
    healer = await make()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    before = (await js.account_info()).api.total
    outcomes = await asyncio.gather(*(healer.handle(_injury(0, f"core/src/{n}")) for n in names))
    after = (await js.account_info()).api.total
    await nc.drain()
    assert [o.kind for o in outcomes] == [Kind.HEALED] * len(names)
    assert after - before - 1 <= len(names) + 2  # the second account_info counts once


async def _window_holder(coord: KvCoordinator, healer: Healer) -> str | None:
    """Who holds the window of P in the throttle bucket (None: nobody)."""
    from nats.js.errors import KeyNotFoundError

    key = kv_key(f"{healer.repo_key}|unauthorized_directory|{P}")
    try:
        entry = await coord.throttle.get(key)
    except KeyNotFoundError:
        return None
    return (entry.value or b"").decode() or None
