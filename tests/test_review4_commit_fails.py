"""A batch whose commit fails after its staging: an injury whose directory held only untracked
files is still answered SKIPPED (its files are gone locally), as before stage and commit ran in
one thread call, not FAILED with the commit's error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from auto_healer.batch import UNTRACKED_ONLY
from auto_healer.checkout import Checkout, Identity
from auto_healer.contracts import parse_injury
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, git, injury

Repo = tuple[Path, Path]


async def test_an_untracked_only_injury_is_skipped_when_the_batch_commit_fails(
    repo: Repo,
) -> None:
    """A tracked directory and an untracked-only one in one batch; git refuses the commit (an
    empty author name): the tracked one fails with the commit's error, the untracked one is
    SKIPPED, its directory removed."""
    _remote, work = repo
    seed_dirs(work, ["tracked0"])
    untracked = work / "core" / "src" / "loose0"
    untracked.mkdir(parents=True)
    (untracked / "scratch.py").write_text("# never committed\n")
    checkout = Checkout.open(work, identity=Identity(name="", email=""))
    healer = Healer(load_playbooks(PLAYBOOKS), checkout, dry_run=False, max_batch=10)
    parsed = [
        parse_injury(json.dumps(injury(f"core/src/{name}/")).encode())
        for name in ("tracked0", "loose0")
    ]
    tracked, loose = await asyncio.gather(*(healer.handle(p) for p in parsed))
    assert tracked.kind is Kind.FAILED and "empty ident" in tracked.reason, tracked.reason
    assert loose.kind is Kind.SKIPPED, (loose.kind, loose.reason)
    assert loose.reason == UNTRACKED_ONLY
    assert not untracked.exists()
    assert git(work, "status", "--porcelain") == ""  # the checkout restored at its base


async def test_a_batch_of_untracked_only_injuries_is_skipped_without_a_commit(repo: Repo) -> None:
    """Two directories of only untracked files: both SKIPPED, nothing committed or pushed."""
    remote, work = repo
    head = git(remote, "rev-parse", "main")
    for name in ("loose1", "loose2"):
        (work / "core" / "src" / name).mkdir(parents=True)
        (work / "core" / "src" / name / "scratch.py").write_text("# never committed\n")
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, max_batch=10)
    parsed = [
        parse_injury(json.dumps(injury(f"core/src/{name}/")).encode())
        for name in ("loose1", "loose2")
    ]
    outcomes = await asyncio.gather(*(healer.handle(p) for p in parsed))
    assert [(o.kind, o.reason) for o in outcomes] == [(Kind.SKIPPED, UNTRACKED_ONLY)] * 2
    assert git(remote, "rev-parse", "main") == head
    assert git(work, "status", "--porcelain", "--untracked-files=all") == ""
