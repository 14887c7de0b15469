"""The sync of a batch: started once its path locks are held, beside the healed-id reads; and
the clean-clone fast path a sync leaves behind. Real repositories, no mocks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.coordination import LocalCoordinator
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, commit_count, git, injury
from tests.test_batch import _books
from tests.test_checkout import other_clone_pushes

Repo = tuple[Path, Path]


async def _batch(healer: Healer, paths: list[str]) -> list[Outcome]:
    """Hand injuries straight to the batch (past the intake's healed-id read)."""
    books = healer.playbooks
    outs = []
    for p in paths:
        parsed = parse_injury(json.dumps(injury(p + "/")).encode())
        parsed, book = healer.claimed(parsed)
        assert book is not None and book is books.match(parsed.injury)
        outs.append(healer._batcher.heal(parsed, book, f"{healer.repo_key}|{p}"))
    return list(await asyncio.gather(*outs))


async def test_a_batch_found_healed_under_its_locks_commits_nothing_and_heals_on(
    repo: Repo,
) -> None:
    """Ids healed by another delivery meanwhile are skipped under the locks; the sync started
    beside that read is waited out, and the next batch heals on the remote head."""
    remote, work = repo
    seed_dirs(work, ["x0", "x1", "y0"])
    coord = LocalCoordinator()
    books, co = load_playbooks(PLAYBOOKS), Checkout.open(work)
    healer = Healer(books, co, dry_run=False, coordinator=coord)
    for p in ["core/src/x0", "core/src/x1"]:
        parsed = parse_injury(json.dumps(injury(p + "/")).encode())
        await coord.mark_healed(parsed.id, "c0ffee" * 6 + "c0ff")
    before = commit_count(remote)
    skipped = await _batch(healer, ["core/src/x0", "core/src/x1"])
    assert [o.kind for o in skipped] == [Kind.SKIPPED] * 2
    assert all(o.reason.startswith("already healed by commit c0ffee") for o in skipped)
    assert commit_count(remote) == before
    [healed] = await _batch(healer, ["core/src/y0"])
    assert healed.kind is Kind.HEALED, healed.reason
    assert commit_count(remote) == before + 1
    assert git(remote, "ls-tree", "-r", "--name-only", "main", "core/src/y0") == ""
    assert (work / "core/src/x0/stray.py").exists()  # skipped: never touched


async def test_a_sync_that_fails_ahead_fails_the_batch_retryable(
    repo: Repo, tmp_path: Path
) -> None:
    """The sync started beside the healed-id reads fails (remote gone): the batch's injuries
    fail retryably with git's error, nothing is deleted, no commit lands."""
    remote, work = repo
    seed_dirs(work, ["z0", "z1"])
    books = _books(tmp_path, "attempts: 4", "attempts: 1")
    healer = Healer(load_playbooks(books), Checkout.open(work), dry_run=False)
    before = commit_count(remote)
    git(work, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    outcomes = await _batch(healer, ["core/src/z0", "core/src/z1"])
    assert [(o.kind, o.retryable) for o in outcomes] == [(Kind.FAILED, True)] * 2, outcomes
    assert (work / "core/src/z0/stray.py").exists()
    assert commit_count(remote) == before


def test_a_synced_clone_is_reset_again_once_a_heal_touched_it(repo: Repo, tmp_path: Path) -> None:
    """After a sync the next one may skip the reset, but not once an apply changed the tree,
    nor once the remote moved."""
    remote, work = repo
    seed_dirs(work, ["w0"])
    co = Checkout.clone(str(remote), tmp_path / "clones")
    try:
        co.sync()
        co.apply_files(["core/src/w0"], {}, ())
        assert not (co.root / "core/src/w0").exists()
        co.sync()
        assert (co.root / "core/src/w0/stray.py").read_text() == "# w0\n"
        pushed = other_clone_pushes(tmp_path, remote)
        assert co.sync() == pushed
        assert (co.root / "NEW.md").exists()
    finally:
        co.close()
