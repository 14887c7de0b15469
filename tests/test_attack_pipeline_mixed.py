"""Batched heals beside heals outside the batches (`batch: false`, and a heal branch) on the
same, parent and child paths, with a second delivery of one id in the next batch, while the
first batch's push is held: real JetStream KV locks (waiting allowed), a real bare remote."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import nats
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import KvCoordinator
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, injury, injury_trailers, remote_files
from tests.test_batch_pipeline import _exists, _gate, _until

Repo = tuple[Path, Path]


def _books(tmp_path: Path) -> Path:
    """The playbooks plus a `batch: false` twin and a heal-branch twin of the deleter."""
    books = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, books)
    text = (
        (books / "unauthorized_directory.yaml")
        .read_text()
        .replace("throttle:\n  window_s: 60\n", "")
    )
    for name, extra in [("single_dir", "batch: false\n"), ("branch_dir", "")]:
        own = text.replace("name: unauthorized_directory", f"name: {name}")
        own = own.replace("injury_type: unauthorized_directory", f"injury_type: {name}")
        if name == "branch_dir":
            own = own.replace("push_to: branch", "push_to: heal-branch")
        (books / f"{name}.yaml").write_text(own + extra)
    (books / "unauthorized_directory.yaml").write_text(text)
    return books


async def test_batches_beside_single_heals_on_shared_paths_end_and_heal_each_id_once(
    repo: Repo, nats_server: NatsServer, tmp_path: Path
) -> None:
    """No heal waits forever; every id lands at most once on main; every path ends healed."""
    remote, work = repo
    seed_dirs(work, ["a", "a/x", "b", "c", "d"])
    gate = _gate(remote, tmp_path, fail=False)
    nc = await nats.connect(nats_server.url)
    coord = await KvCoordinator.create(nc.jetstream(), owner="a", lock_ttl_s=30, lock_wait_s=20)
    healer = Healer(
        load_playbooks(_books(tmp_path)),
        Checkout.open(work),
        dry_run=False,
        coordinator=coord,
        max_batch=2,
    )

    def sent(path: str, kind: str = "unauthorized_directory", ts: float = 1.0) -> object:
        return parse_injury(json.dumps(injury(path, kind, timestamp=ts)).encode())

    batched = [sent("core/src/b/"), sent("core/src/a/x/"), sent("core/src/b/"), sent("core/src/a/")]
    singles = [
        sent("core/src/a/", "single_dir", 2.0),
        sent("core/src/c/", "single_dir", 3.0),
        sent("core/src/c/", "branch_dir", 4.0),
    ]
    later = [sent("core/src/c/", ts=5.0), sent("core/src/d/")]
    tasks = [asyncio.ensure_future(healer.handle(p)) for p in batched[:2]]  # type: ignore[arg-type]
    await _until("batch 1's push", lambda: _exists(gate / "IN_PUSH"))
    tasks += [asyncio.ensure_future(healer.handle(p)) for p in [*batched[2:], *singles, *later]]  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    (gate / "GO").touch()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    await nc.drain()
    reasons = [(o.kind.value, o.reason) for o in outcomes]
    assert all(o.kind in (Kind.HEALED, Kind.SKIPPED) for o in outcomes), reasons
    first_b, again_b = outcomes[0], outcomes[2]
    assert first_b.kind is Kind.HEALED and first_b.commit, reasons
    assert again_b.kind is Kind.SKIPPED and again_b.reason.startswith("already healed"), reasons
    trailers = injury_trailers(remote)
    for o in outcomes:
        assert o.injury is not None and trailers.count(o.injury.id) <= 1, reasons
    files = remote_files(remote)
    assert not [f for f in files if f.startswith(tuple(f"core/src/{n}/" for n in "abcd"))], files
