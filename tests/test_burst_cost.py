"""What a burst costs: the work of a batch of heals is done together, not once per injury.

Counted with git's own trace (GIT_TRACE2_EVENT) on real repositories; never timed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.playbooks import load_playbooks
from auto_healer.remote_tree import RemoteTree
from auto_healer.settings import Settings

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, git, injury
from tests.test_checkout import other_clone_pushes

Repo = tuple[Path, Path]


def _git_starts(events: Path, command: str) -> int:
    """How many `git <command>` processes the trace saw start."""
    starts = [json.loads(line) for line in events.read_text().splitlines()]
    return sum(1 for e in starts if e["event"] == "start" and command in e["argv"])


async def test_a_batch_is_verified_with_a_few_tree_listings(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 heals in one commit are checked on the remote head by a few `ls-tree` (was 30; how
    many depends on how the paths arrive while one listing runs: 2 alone, 3 in a busy suite)."""
    remote, work = repo
    names = [f"v{i:02d}" for i in range(30)]
    seed_dirs(work, names)
    events = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(events))
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False)
    parsed = [parse_injury(json.dumps(injury(f"core/src/{n}/")).encode()) for n in names]
    outcomes = await asyncio.gather(*(healer.handle(p) for p in parsed))
    assert [(o.kind, o.verified) for o in outcomes] == [(Kind.HEALED, True)] * len(names)
    assert len({o.commit for o in outcomes}) == 1
    assert _git_starts(events, "ls-tree") <= 5
    assert not git(remote, "ls-tree", "main", "--", *(f"core/src/{n}" for n in names)).strip()


async def test_paths_asked_together_get_the_answers_asked_alone(repo: Repo) -> None:
    """Nested, trailing-slash, missing and root paths: one listing answers each as alone."""
    _remote, work = repo
    seed_dirs(work, ["deep/er", "flat"])
    tree = RemoteTree(work, git(work, "rev-parse", "HEAD").strip())
    paths = [
        "core/src/deep",
        "core/src/deep/er/",
        "core/src/deep/er/stray.py",
        "core/src/flat",
        "core/src/fla",
        "core/src/flat/none",
        "core",
        "nope/",
        ".",
    ]
    together = await asyncio.gather(*(tree.has(p) for p in paths))
    alone = [bool(git(work, "ls-tree", "--full-tree", "HEAD", "--", p).strip()) for p in paths]
    assert together == alone
    assert together[:3] == [True, True, True] and together[4:6] == [False, False]


async def test_paths_inside_one_another_in_one_batch_heal_as_one_after_another(repo: Repo) -> None:
    """Nested paths in one batch: each heals in turn, what lay inside a deleted one is already
    absent when planned (deletions planned ahead never hide one another)."""
    remote, work = repo
    seed_dirs(work, ["n0", "n0/in", "n1", "n2/deep/er"])
    paths = ["core/src/n0/in/", "core/src/n1/", "core/src/n0/", "core/src/n2", "core/src/n2/deep/"]
    payloads = [dict(injury(p), timestamp=1735920000.0 + i) for i, p in enumerate(paths)]
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False)
    parsed = [parse_injury(json.dumps(p).encode()) for p in payloads]
    outcomes = await asyncio.gather(*(healer.handle(p) for p in parsed))
    kinds = [o.kind for o in outcomes]
    assert kinds == [Kind.HEALED, Kind.HEALED, Kind.HEALED, Kind.HEALED, Kind.SKIPPED]
    assert "already absent" in outcomes[4].reason
    assert len({o.commit for o in outcomes if o.kind is Kind.HEALED}) == 1
    left = git(remote, "ls-tree", "-r", "--name-only", "main", "--", "core/src/n0", "core/src/n1")
    assert not left.strip() and not git(remote, "ls-tree", "main", "--", "core/src/n2").strip()


async def _heal_all(healer: Healer, names: list[str]) -> list[Kind]:
    parsed = [parse_injury(json.dumps(injury(f"core/src/{n}/")).encode()) for n in names]
    return [o.kind for o in await asyncio.gather(*(healer.handle(p) for p in parsed))]


async def test_after_our_own_push_the_next_batch_syncs_without_a_reset(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our clone, just pushed and untouched since: the next sync fetches only (no `checkout`,
    no `clean`: it ran both)."""
    remote, work = repo
    seed_dirs(work, ["s0", "s1", "s2", "s3"])
    healer = Healer(
        load_playbooks(PLAYBOOKS), Checkout.clone(str(remote), tmp_path / "own"), dry_run=False
    )
    assert await _heal_all(healer, ["s0", "s1"]) == [Kind.HEALED] * 2
    events = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(events))
    assert await _heal_all(healer, ["s2", "s3"]) == [Kind.HEALED] * 2
    assert _git_starts(events, "fetch") >= 1
    assert _git_starts(events, "checkout") == 0 and _git_starts(events, "clean") == 0
    assert not git(remote, "ls-tree", "main", "--", *(f"core/src/s{i}" for i in range(4))).strip()


async def test_a_remote_moved_since_our_push_is_synced_in_full(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone pushed after us: the next batch resets onto their commit and keeps it."""
    remote, work = repo
    seed_dirs(work, ["m0", "m1"])
    healer = Healer(
        load_playbooks(PLAYBOOKS), Checkout.clone(str(remote), tmp_path / "own"), dry_run=False
    )
    assert await _heal_all(healer, ["m0"]) == [Kind.HEALED]
    theirs = other_clone_pushes(tmp_path, remote)
    events = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(events))
    assert await _heal_all(healer, ["m1"]) == [Kind.HEALED]
    assert _git_starts(events, "checkout") == 1
    git(remote, "merge-base", "--is-ancestor", theirs, "main")
    assert git(remote, "show", "main:NEW.md") == "new\n"


def test_in_flight_by_default_holds_two_full_batches() -> None:
    """A burst fills the next batch while one heals: the default in-flight bound holds two full
    batches (256 against batches of 200 split every 256 injuries into two commits)."""
    fields = Settings.model_fields
    assert fields["max_in_flight"].default >= 2 * fields["max_batch"].default
