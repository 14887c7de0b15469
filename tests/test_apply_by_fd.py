"""The apply step confines by file descriptor: text checks, then a walk that never follows a
symlink and never enters `.git` under another name (`fsops`). Real files, real repositories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from auto_healer.checkout import Checkout
from auto_healer.demo import SEED, make_repo
from auto_healer.errors import InjuryRejected
from auto_healer.fsops import git_dir_stat, remove_tree, replace_file
from auto_healer.paths import DEFAULT_PROTECTED

from tests.conftest import tree_digest

PROTECTED = (*DEFAULT_PROTECTED, "docs/**")


@pytest.mark.parametrize(
    "raw", ["../outside", "/etc", ".", "core/../../outside", ".git", ".github/x", "docs/a"]
)
def test_apply_refuses_escapes_the_root_and_protected_paths(tmp_path: Path, raw: str) -> None:
    """An escaping, root, .git or protected path is refused by the apply step itself."""
    _, work = make_repo(tmp_path, {**SEED, "docs/a/keep.md": "keep\n"})
    before = tree_digest(work)
    with pytest.raises(InjuryRejected):
        Checkout.open(work).apply_files([raw], {}, PROTECTED)
    assert tree_digest(work) == before


def test_apply_refuses_a_link_to_git_as_a_directory_to_delete(tmp_path: Path) -> None:
    """`core/alias -> ../.git` is refused (a symlink), and .git is left whole."""
    _, work = make_repo(tmp_path, SEED)
    (work / "core/alias").symlink_to("../.git")
    before = tree_digest(work / ".git")
    with pytest.raises(InjuryRejected, match="symlink"):
        Checkout.open(work).apply_files(["core/alias"], {}, DEFAULT_PROTECTED)
    assert tree_digest(work / ".git") == before
    assert (work / "core/alias").is_symlink()


def test_apply_refuses_to_write_through_a_link_to_git(tmp_path: Path) -> None:
    """A write to `core/alias/config` with `core/alias -> ../.git` never reaches .git/config."""
    _, work = make_repo(tmp_path, SEED)
    (work / "core/alias").symlink_to("../.git")
    config = (work / ".git/config").read_bytes()
    with pytest.raises(InjuryRejected, match="symlink"):
        Checkout.open(work).apply_files([], {"core/alias/config": b"pwned\n"}, DEFAULT_PROTECTED)
    assert (work / ".git/config").read_bytes() == config


def test_the_walk_refuses_the_git_directory_by_inode_on_the_way_and_at_the_end(
    tmp_path: Path,
) -> None:
    """A directory with .git's inode (as `.GIT` is on a case-insensitive file system) is
    refused wherever it is met: on the way down, or as the directory to delete."""
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("keep\n")
    alias = os.stat(root / "a")  # stands for `.git` met under another name
    with pytest.raises(InjuryRejected, match=r"\.git under another name"):
        remove_tree(root, "a/b", git_dir=alias)
    with pytest.raises(InjuryRejected, match=r"\.git under another name"):
        replace_file(root, "a/f.txt", b"pwned\n", git_dir=alias)
    with pytest.raises(InjuryRejected, match=r"\.git under another name"):
        remove_tree(root, "a", git_dir=alias)
    assert (root / "a" / "b").is_dir()
    assert (root / "a" / "f.txt").read_text() == "keep\n"
    assert git_dir_stat(root) is None  # no .git here: nothing to compare
    assert remove_tree(root, "a/b", git_dir=git_dir_stat(root))
