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

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, git, injury

Repo = tuple[Path, Path]


def _git_starts(events: Path, command: str) -> int:
    """How many `git <command>` processes the trace saw start."""
    starts = [json.loads(line) for line in events.read_text().splitlines()]
    return sum(1 for e in starts if e["event"] == "start" and command in e["argv"])


async def test_a_batch_is_verified_with_a_few_tree_listings(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 heals in one commit are checked on the remote head by at most 2 `ls-tree` (was 30)."""
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
    assert _git_starts(events, "ls-tree") <= 2
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
