"""A redelivered, already-healed injury of a batched playbook must not claim the throttle
window of its path: a genuinely new injury there would be throttled (and never healed), and
the redelivery itself told "throttled" instead of "already healed". Real JetStream KV."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import KvCoordinator
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, injury, injury_trailers

Repo = tuple[Path, Path]
WINDOW_S = 1.0


@pytest.fixture
async def healer(repo: Repo, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Healer]:
    """A batching healer whose unauthorized_directory throttle window is one second."""
    books = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, books)
    book = books / "unauthorized_directory.yaml"
    book.write_text(book.read_text().replace("window_s: 60", f"window_s: {WINDOW_S}"))
    nc = await nats.connect(nats_server.url)
    coord = await KvCoordinator.create(nc.jetstream(), owner="a", lock_ttl_s=30)
    yield Healer(load_playbooks(books), Checkout.open(repo[1]), dry_run=False, coordinator=coord)
    await nc.drain()


async def test_a_redelivered_healed_injury_does_not_throttle_a_new_one_on_its_path(
    repo: Repo, healer: Healer
) -> None:
    """X heals p; after its window, X is redelivered (already healed), then a new injury Y
    on p (the directory is back): X is "already healed", Y is healed, not throttled."""
    remote, work = repo
    path = "core/src/p"
    seed_dirs(work, ["p"])
    first = parse_injury(json.dumps(injury(path + "/")).encode())
    healed = await healer.handle(first)
    assert healed.kind is Kind.HEALED and healed.commit, healed.reason
    await asyncio.sleep(WINDOW_S + 0.3)  # X's throttle window is over
    again = await healer.handle(first)
    assert again.kind is Kind.SKIPPED, again.reason
    assert again.reason == f"already healed by commit {healed.commit[:12]}"
    seed_dirs(work, ["p"])  # the directory is back: a genuinely new injury
    fresh = parse_injury(json.dumps(injury(path + "/", timestamp=1735920999.0)).encode())
    assert fresh.id != first.id
    outcome = await healer.handle(fresh)
    assert outcome.kind is Kind.HEALED, outcome.reason
    assert fresh.id in injury_trailers(remote)
