"""Verification of a batch: its injuries wait for one read of the remote head together and ask
their paths of one `ls-tree`. Counted with git's own trace (`GIT_TRACE`), real repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
from auto_healer.outcomes import Kind

from tests.agent_support import seed_dirs
from tests.conftest import commit_count
from tests.test_batch import _heal_together, _healer, _paths


async def test_a_batch_is_verified_with_one_ls_tree_per_commit(
    repo: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 injuries healed in batches: every one verified, with one `ls-tree` per commit."""
    remote, work = repo
    paths = _paths(60)
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in paths])
    before = commit_count(remote)
    trace = tmp_path / "git-trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    outcomes = await _heal_together(_healer(work, max_batch=25), paths)
    monkeypatch.delenv("GIT_TRACE")
    assert [(o.kind, o.verified) for o in outcomes] == [(Kind.HEALED, True)] * 60
    commits = commit_count(remote) - before
    lines = trace.read_text().splitlines()
    ls_trees = [line for line in lines if "built-in: git" in line and " ls-tree " in line]
    assert ls_trees, "git's trace shows no ls-tree: the count below would prove nothing"
    assert len(ls_trees) <= commits, (commits, len(ls_trees))
