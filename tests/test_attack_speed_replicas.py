"""Two replicas (real nats-server with JetStream KV, one bare remote, a clone each) handed the
same injuries at once: the unanswered lock release and the sync beside the healed-id reads
must neither heal an injury twice nor lose one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import KvCoordinator
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.pathlocks import let_go_by
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, git, injury, injury_trailers

Repo = tuple[Path, Path]


@pytest.fixture
async def conns(nats_server: NatsServer) -> AsyncIterator[list[Any]]:
    cs = [await nats.connect(nats_server.url) for _ in range(2)]
    yield cs
    for c in cs:
        await c.drain()


async def _replica(nc: Any, name: str, remote: Path, tmp_path: Path) -> Healer:
    coord = await KvCoordinator.create(nc.jetstream(), owner=name, lock_ttl_s=30)
    coord.let_go = let_go_by(nc.publish)
    co = Checkout.clone(str(remote), tmp_path / name)
    return Healer(load_playbooks(PLAYBOOKS), co, dry_run=False, coordinator=coord)


async def _until_not_busy(h: Healer, body: bytes) -> Outcome:
    """A redelivery as soon as the other replica lets go: handled again while it is busy."""
    for _ in range(2000):
        out = await h.handle(parse_injury(body))
        if not (out.kind is Kind.FAILED and out.retryable):
            return out
        await asyncio.sleep(0.002)
    raise AssertionError(f"still busy: {out.reason}")


@pytest.mark.timeout(120)
async def test_the_same_injuries_handed_to_two_replicas_are_healed_once_each(
    repo: Repo, tmp_path: Path, conns: list[Any]
) -> None:
    """One injury to both replicas at once, the busy one redelivered at once until it is
    answered: one heal and one trailer per id, none lost."""
    remote, work = repo
    names = [f"twin{i}" for i in range(12)]
    seed_dirs(work, names)
    a, b = [await _replica(nc, n, remote, tmp_path) for nc, n in zip(conns, "ab", strict=True)]
    for n in names:
        body = json.dumps(injury(f"core/src/{n}/")).encode()
        outs = await asyncio.gather(*(_until_not_busy(h, body) for h in (a, b)))
        kinds = sorted(o.kind.value for o in outs)
        assert kinds == ["healed", "skipped"], [o.reason for o in outs]
    ids = [parse_injury(json.dumps(injury(f"core/src/{n}/")).encode()).id for n in names]
    assert sorted(t for t in injury_trailers(remote) if t in ids) == sorted(ids)
    assert git(remote, "ls-tree", "-d", "--name-only", "main", "core/src/").split() == [
        "core/src/random_stuff"
    ]
