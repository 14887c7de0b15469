"""Attacks on the sync fast path (no `checkout -f -B` for a clean branch at the remote head)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import git, heal_cli, injury, remote_files, write_injuries

Repo = tuple[Path, Path]
STUFF = "core/src/random_stuff"
DEV = ("-c", "user.name=Dev Eloper", "-c", "user.email=dev@aura.hive")


def _unpushed(work: Path, *, empty: bool) -> str:
    """A local branch `wip` one commit ahead of main that the user never pushed; its sha."""
    git(work, "checkout", "-q", "-b", "wip")
    if not empty:
        (work / "SECRET.md").write_text("not for the remote\n")
        git(work, "add", "SECRET.md")
    git(work, *DEV, "commit", "-q", "--allow-empty", "-m", "wip: not for the remote")
    sha = git(work, "rev-parse", "HEAD").strip()
    git(work, "checkout", "-q", "main")
    return sha


def _heal(work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_injuries(tmp_path / "i.json", injury(STUFF + "/"))
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0 and report is not None, err
    assert [o["outcome"] for o in report["outcomes"]] == ["healed"], report


def test_a_merge_left_open_with_a_clean_status_is_not_pushed_inside_the_heal(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MERGE_HEAD of an open merge must not make the heal a merge commit of unpushed work."""
    remote, work = repo
    wip = _unpushed(work, empty=False)
    git(work, *DEV, "merge", "-q", "--no-commit", "--no-ff", "-s", "ours", "wip")
    _heal(work, tmp_path, capsys)
    assert wip not in git(remote, "rev-list", "main").split()
    assert "SECRET.md" not in remote_files(remote)


def test_an_open_cherry_pick_does_not_lend_its_author_to_the_heal_commit(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CHERRY_PICK_HEAD of a stopped cherry-pick must not make the heal someone else's commit."""
    remote, work = repo
    _unpushed(work, empty=True)
    stopped = subprocess.run(["git", *DEV, "cherry-pick", "wip"], cwd=work, capture_output=True)
    assert stopped.returncode != 0, "the empty cherry-pick was expected to stop"
    _heal(work, tmp_path, capsys)
    assert git(remote, "log", "-1", "--format=%an", "main").strip() == "auto-healer"
