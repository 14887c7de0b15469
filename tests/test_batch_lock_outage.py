"""A batch whose path locks the store cannot take: an outage, not a heal attempt."""

from __future__ import annotations

import json
from pathlib import Path

import nats
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import BUCKET_LOCKS, KvCoordinator
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, injury

Repo = tuple[Path, Path]


async def test_a_lock_the_store_cannot_take_is_a_store_outage(
    repo: Repo, nats_server: NatsServer
) -> None:
    """The locks bucket gone from the store: the batched injury fails retryable and marked
    `store_unavailable` (so JetStream brings it back whatever its budget), nothing healed."""
    _remote, work = repo
    seed_dirs(work, ["lo0"])
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        coord = await KvCoordinator.create(js, owner="a", lock_ttl_s=30)
        await js.delete_stream(f"KV_{BUCKET_LOCKS}")
        books = load_playbooks(PLAYBOOKS)
        healer = Healer(books, Checkout.open(work), dry_run=False, coordinator=coord)
        outcome = await healer.handle(parse_injury(json.dumps(injury("core/src/lo0/")).encode()))
    finally:
        await nc.drain()
    assert outcome.kind is Kind.FAILED, outcome.reason
    assert outcome.retryable and outcome.store_unavailable, outcome
    assert (work / "core/src/lo0").is_dir()
