"""The fast replay in `pushrace.rebase` against `git rebase --onto`: each case runs twice on real
repositories, once with each (the `mover` parameter), and must give the same result with both
(written by a review of the replay; its first findings, a re-encoded message, a touched file
stopping the move and a remote that did not move, failed here before their fixes)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from auto_healer import pushrace
from auto_healer.checkout import Checkout, Identity
from auto_healer.pushrace import Change, Replan, rebase

from tests.conftest import git

HEALED = "core/src/random_stuff"
MESSAGE = "auto-healer: delete core/src/random_stuff\n\nInjury-Id: bee-1\nHealed-By: auto-healer\n"


def _old_move(co: Checkout, base: str, head: str) -> None:
    """main's move, verbatim: `git rebase -q --onto head base`."""
    who = co.identity
    co.git(
        *("-c", f"user.name={who.name}", "-c", f"user.email={who.email}"),
        *("-c", "commit.gpgsign=false", "rebase", "-q", "--onto", head, base),
    )


@pytest.fixture(params=["replay", "rebase"])
def mover(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the case with race's replay, then with main's `git rebase`."""
    if request.param == "rebase":
        monkeypatch.setattr(pushrace, "_replay", _old_move)
    return str(request.param)


def _heal(work: Path, path: str = HEALED, message: str = MESSAGE, *cfg: str) -> str:
    """Commit the deletion of `path` as `Checkout.commit` does; the base it was made on."""
    base = git(work, "rev-parse", "HEAD").strip()
    git(work, "rm", "-r", "-q", "--", path)
    git(work, *cfg, "-c", "user.name=healer", "-c", "user.email=h@h", "commit", "-q", "-m", message)
    return base


def _teammate(tmp_path: Path, remote: Path, change: Callable[[Path], None]) -> str:
    """Another clone makes `change`, commits everything and pushes; its commit."""
    other = tmp_path / "teammate"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    change(other)
    git(other, "add", "-A", "-f")
    git(other, "-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qm", "teammate")
    git(other, "push", "-q", "origin", "main")
    return git(other, "rev-parse", "HEAD").strip()


def _co(work: Path) -> Checkout:
    return Checkout.open(work, identity=Identity("healer", "h@h"))


def _raw_message(work: Path, rev: str) -> bytes:
    raw = subprocess.run(
        ["git", "cat-file", "commit", rev], cwd=work, check=True, capture_output=True
    ).stdout
    return raw.split(b"\n\n", 1)[1]


def _raw_header(work: Path, rev: str, key: bytes) -> list[bytes]:
    raw = subprocess.run(
        ["git", "cat-file", "commit", rev], cwd=work, check=True, capture_output=True
    ).stdout
    return [ln for ln in raw.split(b"\n\n", 1)[0].splitlines() if ln.startswith(key + b" ")]


def test_an_ignored_file_in_the_way_is_overwritten_as_rebase_does(
    mover: str, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """A file the checkout ignores (a build output) that the teammate's commit now tracks:
    `git rebase` overwrites it, as git does with ignored files; the replay must not Replan."""
    remote, work = repo
    (work / ".git" / "info" / "exclude").write_text("gen.txt\n")
    (work / "gen.txt").write_text("a local build output\n")
    base = _heal(work)
    theirs = _teammate(tmp_path, remote, lambda o: (o / "gen.txt").write_text("tracked now\n"))
    assert rebase(_co(work), base, [Change(delete=(HEALED,))]) == theirs
    assert (work / "gen.txt").read_text() == "tracked now\n"
    assert git(work, "status", "--porcelain") == ""


def test_a_file_touched_but_unchanged_does_not_stop_the_move(
    mover: str, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """A file whose stat changed but not its bytes (a tool touched it), which the teammate
    edits: `git rebase` refreshes the index first; the replay must not Replan on it."""
    remote, work = repo
    base = _heal(work)
    theirs = _teammate(
        tmp_path, remote, lambda o: (o / "pyproject.toml").write_text("[project]\nname='x'\n")
    )
    os.utime(work / "pyproject.toml", (1_000_000_000, 1_000_000_000))
    assert rebase(_co(work), base, [Change(delete=(HEALED,))]) == theirs
    assert (work / "pyproject.toml").read_text() == "[project]\nname='x'\n"
    assert git(work, "status", "--porcelain") == ""


def test_the_author_is_kept_and_only_its_date_may_change(
    mover: str, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The heal commit keeps its author's name and email (the replay gives it a new date,
    where `git rebase` keeps the old one: nothing reads it)."""
    remote, work = repo
    base = _heal(work)
    before = [line.rsplit(b" ", 2)[0] for line in _raw_header(work, "HEAD", b"author")]
    _teammate(tmp_path, remote, lambda o: (o / "NEW.md").write_text("new\n"))
    rebase(_co(work), base, [Change(delete=(HEALED,))])
    after = [line.rsplit(b" ", 2)[0] for line in _raw_header(work, "HEAD", b"author")]
    assert after == before == [b"author healer <h@h>"]


@pytest.mark.parametrize(
    "cfg",
    [
        (),
        ("-c", "i18n.commitEncoding=ISO-8859-1"),
        ("-c", "i18n.commitEncoding=ISO-8859-1", "-c", "i18n.logOutputEncoding=UTF-8"),
    ],
)
def test_the_message_is_byte_identical(
    mover: str, cfg: tuple[str, ...], repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """A non-ASCII message, under the repository's encoding settings, moves byte for byte."""
    remote, work = repo
    for i in range(0, len(cfg), 2):
        key, value = cfg[i + 1].split("=", 1)
        git(work, "config", key, value)
    message = "auto-healer: löschen\r\n\n  indented\n\nInjury-Id: bée-1\nHealed-By: auto-healer\n"
    base = _heal(work, HEALED, message)
    before = _raw_message(work, "HEAD")
    encoding = _raw_header(work, "HEAD", b"encoding")
    _teammate(tmp_path, remote, lambda o: (o / "NEW.md").write_text("new\n"))
    rebase(_co(work), base, [Change(delete=(HEALED,))])
    assert _raw_message(work, "HEAD") == before
    assert _raw_header(work, "HEAD", b"encoding") == encoding


def _symlink_mode_gitlink(o: Path) -> None:
    (o / "link").symlink_to("core/src/app.py")
    (o / "core" / "src" / "app.py").chmod(0o755)
    sub = git(o, "rev-parse", "HEAD").strip()
    git(o, "update-index", "--add", "--cacheinfo", f"160000,{sub},vendor/sub")


def test_a_symlink_a_mode_and_a_gitlink_of_the_teammate_are_kept(
    mover: str, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The pushed commit is the teammate's tree minus the heal's directory, nothing else."""
    remote, work = repo
    base = _heal(work)
    theirs = _teammate(tmp_path, remote, _symlink_mode_gitlink)
    rebase(_co(work), base, [Change(delete=(HEALED,))])
    assert git(work, "rev-parse", "HEAD~1").strip() == theirs
    expected = git(remote, "ls-tree", "-r", "main").splitlines()
    expected = [ln for ln in expected if f"\t{HEALED}/" not in ln]
    assert git(work, "ls-tree", "-r", "HEAD").splitlines() == expected
    assert os.readlink(work / "link") == "core/src/app.py"
    assert git(work, "status", "--porcelain") == ""


def test_a_directory_renamed_under_a_written_file_is_replanned(
    mover: str, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The heal writes a new file in a directory the teammate renames: never moved silently."""
    remote, work = repo
    base = git(work, "rev-parse", "HEAD").strip()
    (work / "core" / "src" / "new.py").write_text("x = 1\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=healer", "-c", "user.email=h@h", "commit", "-qm", MESSAGE)
    ours = git(work, "rev-parse", "HEAD").strip()
    _teammate(tmp_path, remote, lambda o: git(o, "mv", "core/src", "core/lib"))
    with pytest.raises(Replan):
        rebase(_co(work), base, [Change(write={"core/src/new.py": b"x = 1\n"})])
    assert git(work, "rev-parse", "HEAD").strip() == ours
    assert git(work, "status", "--porcelain") == ""


@pytest.mark.parametrize("inside", ["core/src/random_stuff/more.txt", "core/src/random_stuff"])
def test_the_teammate_inside_the_deleted_directory_is_replanned(
    mover: str, inside: str, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """A file added inside the deleted directory, or the same directory deleted: Replan."""
    remote, work = repo
    base = _heal(work)
    ours = git(work, "rev-parse", "HEAD").strip()

    def change(o: Path) -> None:
        if inside == HEALED:
            git(o, "rm", "-r", "-q", HEALED)
        else:
            (o / inside).write_text("theirs\n")

    _teammate(tmp_path, remote, change)
    with pytest.raises(Replan):
        rebase(_co(work), base, [Change(delete=(HEALED,))])
    assert git(work, "rev-parse", "HEAD").strip() == ours


def test_an_untracked_file_in_the_way_is_replanned_and_left_consistent(
    mover: str, repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """An untracked (not ignored) file where the teammate adds one: Replan, HEAD/index intact."""
    remote, work = repo
    base = _heal(work)
    ours = git(work, "rev-parse", "HEAD").strip()
    (work / "NEW.md").write_text("mine\n")
    _teammate(tmp_path, remote, lambda o: (o / "NEW.md").write_text("theirs\n"))
    with pytest.raises(Replan):
        rebase(_co(work), base, [Change(delete=(HEALED,))])
    assert git(work, "rev-parse", "HEAD").strip() == ours
    assert git(work, "status", "--porcelain") == "?? NEW.md\n"
    assert (work / "NEW.md").read_text() == "mine\n"


def test_a_remote_that_did_not_move_keeps_the_heal_commit(
    mover: str, repo: tuple[Path, Path]
) -> None:
    """The push was refused but the remote is still at the base: the heal commit stays as is."""
    _remote, work = repo
    base = _heal(work)
    ours = git(work, "rev-parse", "HEAD").strip()
    subprocess.run(["sleep", "1.1"], check=True)  # a commit made again would get another sha
    assert rebase(_co(work), base, [Change(delete=(HEALED,))]) == base
    assert git(work, "rev-parse", "HEAD").strip() == ours
