"""A lost push's heal commit moved onto the remote's new head (`pushrace.rebase`) on real
repositories: the fast replay gives what `git rebase` gives (parent, tree, message, author,
a clean checkout holding the other commit's files), and what it cannot replay exactly (several
commits, a remote rewritten under the heal, a conflict) goes to `git rebase` or is replanned."""

from __future__ import annotations

from pathlib import Path

import pytest
from auto_healer.checkout import Checkout, Identity
from auto_healer.pushrace import Change, Replan, rebase

from tests.conftest import git
from tests.test_checkout import other_clone_pushes

HEALED = "core/src/random_stuff"
MESSAGE = "auto-healer: delete core/src/random_stuff\n\nInjury-Id: bee-1\nHealed-By: auto-healer\n"


def _heal(work: Path, path: str = HEALED, message: str = MESSAGE) -> str:
    """Commit the deletion of `path` as the agent does; the base it was made on."""
    base = git(work, "rev-parse", "HEAD").strip()
    git(work, "rm", "-r", "-q", "--", path)
    git(work, "-c", "user.name=healer", "-c", "user.email=h@h", "commit", "-q", "-m", message)
    return base


def _checkout(work: Path) -> Checkout:
    return Checkout.open(work, identity=Identity("healer", "h@h"))


def test_one_heal_commit_is_replayed_as_a_rebase_would(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """Parent is the remote's head, the tree is its tree without the heal's paths, the message
    and author are the heal's, and the checkout is clean with the other commit's file."""
    remote, work = repo
    base = _heal(work)
    theirs = other_clone_pushes(tmp_path, remote)
    co = _checkout(work)
    assert rebase(co, base, [Change(delete=(HEALED,))]) == theirs
    assert git(work, "rev-parse", "HEAD~1").strip() == theirs
    assert git(work, "log", "-1", "--format=%B", "HEAD") == MESSAGE + "\n"
    assert git(work, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "HEAD").strip() == (
        "healer <h@h>|healer <h@h>"
    )
    expected = git(remote, "ls-tree", "-r", "--name-only", "main").split()
    expected = [f for f in expected if not f.startswith(HEALED + "/")]
    assert git(work, "ls-tree", "-r", "--name-only", "HEAD").split() == expected
    assert (work / "NEW.md").read_text() == "new\n"
    assert not (work / HEALED).exists()
    assert git(work, "status", "--porcelain", "--untracked-files=all") == ""
    git(work, "push", "-q", "origin", "HEAD:main")  # a fast-forward: never forced


def test_several_heal_commits_are_rebased(repo: tuple[Path, Path], tmp_path: Path) -> None:
    """Two commits on the base keep being two commits, in order, on the new head."""
    remote, work = repo
    base = _heal(work)
    _heal(work, "core/src/messy.py", "auto-healer: delete messy\n\nInjury-Id: bee-2\n")
    theirs = other_clone_pushes(tmp_path, remote)
    co = _checkout(work)
    rebase(co, base, [Change(delete=(HEALED,)), Change(delete=("core/src/messy.py",))])
    assert git(work, "rev-parse", "HEAD~2").strip() == theirs
    subjects = git(work, "log", "-2", "--format=%s", "HEAD").splitlines()
    assert subjects == ["auto-healer: delete messy", "auto-healer: delete core/src/random_stuff"]
    assert git(work, "status", "--porcelain") == ""


def test_a_rewritten_remote_gets_only_the_heal(repo: tuple[Path, Path], tmp_path: Path) -> None:
    """The remote's history was rewritten under the heal (its base is gone from it): only the
    heal's own change moves onto the new head, nothing of the old base comes back."""
    remote, work = repo
    other = tmp_path / "rewriter"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    base = _heal(work)
    git(other, "rm", "-q", "pyproject.toml")
    git(other, "-c", "user.name=o", "-c", "user.email=o@o", "commit", "-q", "--amend", "-m", "rw")
    git(other, "push", "-q", "--force", "origin", "main")
    co = _checkout(work)
    head = rebase(co, base, [Change(delete=(HEALED,))])
    assert git(work, "rev-parse", "HEAD~1").strip() == head
    assert not (work / "pyproject.toml").exists()  # the rewrite's deletion is kept
    assert git(work, "diff", "--name-only", "HEAD~1", "HEAD").split() == sorted(
        git(remote, "ls-tree", "-r", "--name-only", "main", "--", HEALED).split()
    )


def test_a_conflict_is_replanned_and_leaves_the_checkout_as_it_was(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The other commit edited a file the heal deleted, out of the heal's own paths' sight
    (a rename into them): the replay conflicts, nothing is half-applied, and it is replanned."""
    remote, work = repo
    other = tmp_path / "editor"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    base = _heal(work, "pyproject.toml", "auto-healer: delete it\n\nInjury-Id: bee-3\n")
    (other / "pyproject.toml").write_text("edited by a teammate\n")
    git(other, "-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qam", "edit")
    git(other, "push", "-q", "origin", "main")
    co = _checkout(work)
    ours = git(work, "rev-parse", "HEAD").strip()
    with pytest.raises(Replan):
        rebase(co, base, [Change(delete=("elsewhere",))])  # the paths do not name it
    assert git(work, "rev-parse", "HEAD").strip() == ours
    assert git(work, "status", "--porcelain") == ""
