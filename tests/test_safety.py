"""Regressions of the safety review: symlinks, ignored files, swapped components, case aliases.

Every test works on real files and real git repositories; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from auto_healer.actions import StepContext, StepPlan, get_action
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury_obj
from auto_healer.demo import SEED, make_repo
from auto_healer.errors import InjuryRejected
from auto_healer.paths import DEFAULT_PROTECTED, confine, remove_tree, replace_file

from tests.conftest import git, heal_cli, injury, remote_files, tree_digest, write_injuries

MESSY = "core/src/messy.py"
FORMATTED = b'def add(a, b):\n    return a + b\n\n\nx = {"a": 1}\n'


def commit_all(work: Path, message: str = "more") -> None:
    git(work, "add", "-A")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    git(work, "push", "-q", "origin", "main")


def outside_tree(tmp_path: Path) -> Path:
    """A directory beside the checkout that nothing may ever change."""
    outside = tmp_path / "outside"
    (outside / "b" / "victim").mkdir(parents=True)
    (outside / "b" / "victim" / "keep.txt").write_text("outside")
    (outside / "victim").write_text("precious\n")
    (outside / "victim").chmod(0o600)
    return outside


def format_plan(work: Path, path: str, protected: tuple[str, ...] = DEFAULT_PROTECTED) -> StepPlan:
    ctx = StepContext(parse_injury_obj(injury(path, "unformatted_code")), work, protected)
    action = get_action("format_code")  # not an import of the module: that registers it alone
    return asyncio.run(action.plan(ctx, action.options_model()))


def test_format_heal_never_writes_through_a_committed_temporary_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A committed `.messy.py.auto-healer.tmp -> outside` link is neither written nor pushed."""
    remote, work = make_repo(tmp_path, SEED)
    outside = outside_tree(tmp_path)
    before = tree_digest(outside)
    (work / "core/src/.messy.py.auto-healer.tmp").symlink_to(outside / "victim")
    commit_all(work, "plant a link")
    path = write_injuries(tmp_path / "i.json", injury(MESSY, "unformatted_code"))
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "healed"
    assert tree_digest(outside) == before
    assert stat.S_IMODE((outside / "victim").stat().st_mode) == 0o600
    mode = git(remote, "ls-tree", "main", MESSY).split()[0]
    assert mode == "100644"
    assert git(remote, "show", f"main:{MESSY}").encode() == FORMATTED
    assert not [p for p in os.listdir(work / "core/src") if p.startswith(".auto-healer-")]


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_apply_refuses_to_write_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    """A write target that is a symlink (even one inside), a directory or a FIFO is refused."""
    _, work = make_repo(tmp_path, SEED)
    target = work / "core/src/target.py"
    if kind == "symlink":
        target.symlink_to("app.py")
    elif kind == "directory":
        target.mkdir()
    else:
        os.mkfifo(target)
    kind_before = stat.S_IFMT(target.lstat().st_mode)
    checkout = Checkout.open(work)
    with pytest.raises(InjuryRejected, match="not a regular file"):
        checkout.apply([], {"core/src/target.py": b"pwned\n"}, DEFAULT_PROTECTED)
    assert stat.S_IFMT(target.lstat().st_mode) == kind_before
    assert (work / "core/src/app.py").read_text() == SEED["core/src/app.py"]
    assert sorted(os.listdir(work / "core/src")) == [
        "app.py",
        "messy.py",
        "random_stuff",
        "target.py",
    ]


def test_replace_file_refuses_a_symlink_to_outside(tmp_path: Path) -> None:
    """Past confine, a file swapped for a link to outside is replaced by nothing, nor followed."""
    _, work = make_repo(tmp_path, SEED)
    outside = outside_tree(tmp_path)
    before = tree_digest(outside)
    (work / MESSY).unlink()
    (work / MESSY).symlink_to(outside / "victim")
    with pytest.raises(InjuryRejected, match="not a regular file"):
        replace_file(work, MESSY, b"pwned\n")
    assert tree_digest(outside) == before
    assert (work / MESSY).is_symlink()


def test_replace_file_refuses_a_parent_swapped_for_a_symlink(tmp_path: Path) -> None:
    """A directory above the file swapped for a link to outside (after confine) is refused."""
    _, work = make_repo(tmp_path, {**SEED, "a/victim": "inside\n"})
    outside = outside_tree(tmp_path)
    before = tree_digest(outside)
    confine(work, "a/victim", allow_root=False)  # the check passes ...
    shutil.rmtree(work / "a")
    (work / "a").symlink_to(outside)  # ... then `a` becomes a link to outside/victim's dir
    with pytest.raises(InjuryRejected, match="'a' is a symlink"):
        replace_file(work, "a/victim", b"pwned\n")
    assert tree_digest(outside) == before


def test_replace_file_keeps_the_mode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """An executable stays executable, the bytes are replaced, no temporary file is left."""
    _, work = make_repo(tmp_path, {**SEED, "bin/run.py": "x  =  1\n"})
    (work / "bin/run.py").chmod(0o751)
    replace_file(work, "bin/run.py", b"x = 1\n")
    assert (work / "bin/run.py").read_bytes() == b"x = 1\n"
    assert stat.S_IMODE((work / "bin/run.py").stat().st_mode) == 0o751
    assert os.listdir(work / "bin") == ["run.py"]


def test_format_plan_never_reads_through_symlinks(tmp_path: Path) -> None:
    """Tracked links to outside code or config are not read: no outside bytes in the plan."""
    _, work = make_repo(tmp_path, SEED)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("SECRET  =  'outside'\n")
    (outside / "ruff.toml").write_text('[format]\nquote-style = "single"\n')
    (work / "core/src/leak.py").symlink_to(outside / "secret.py")
    (work / "ruff.toml").symlink_to(outside / "ruff.toml")
    commit_all(work, "links")
    got = format_plan(work, "core")
    assert sorted(got.write) == [MESSY, "core/src/random_stuff/hack.py"]
    assert got.write[MESSY] == FORMATTED  # double quotes: the linked config was not read
    assert "SECRET" not in got.diff


def test_format_touches_only_tracked_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `gen/` ignored, healing `.` formats tracked files and leaves `gen/a.py` as it was."""
    remote, work = make_repo(tmp_path, {**SEED, ".gitignore": "gen/\n"})
    (work / "gen").mkdir()
    (work / "gen/a.py").write_text("y  =  2\n")
    path = write_injuries(tmp_path / "i.json", injury(".", "unformatted_code"))
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "healed"
    assert (work / "gen/a.py").read_text() == "y  =  2\n"
    assert git(remote, "show", f"main:{MESSY}").encode() == FORMATTED
    assert "gen/a.py" not in remote_files(remote)


def test_format_still_honours_protected_globs(tmp_path: Path) -> None:
    """A tracked file under a protected glob is not formatted when its directory is."""
    _, work = make_repo(tmp_path, SEED)
    got = format_plan(work, "core", (*DEFAULT_PROTECTED, "**/hack.py"))
    assert list(got.write) == [MESSY]


@pytest.mark.parametrize("swapped", ["a", "a/b", "a/b/victim"])
def test_delete_refuses_a_component_swapped_for_a_symlink(tmp_path: Path, swapped: str) -> None:
    """A component of the path replaced by a link after confine: refused, nothing outside goes."""
    _, work = make_repo(tmp_path, {**SEED, "a/b/victim/keep.txt": "inside"})
    outside = outside_tree(tmp_path)
    before = tree_digest(outside)
    confine(work, "a/b/victim", allow_root=False)  # the check passes ...
    shutil.rmtree(work / swapped)
    link_to = outside / Path(swapped).relative_to("a") if swapped != "a" else outside
    (work / swapped).symlink_to(link_to)  # ... then a component points outside
    with pytest.raises(InjuryRejected, match="symlink"):
        remove_tree(work, "a/b/victim")
    assert tree_digest(outside) == before
    assert (outside / "b/victim/keep.txt").read_text() == "outside"


def test_remove_tree_deletes_the_directory_and_reports_absence(tmp_path: Path) -> None:
    """remove_tree removes a real directory (True) and is a no-op on an absent one (False)."""
    _, work = make_repo(tmp_path, SEED)
    assert remove_tree(work, "core/src/random_stuff") is True
    assert not (work / "core/src/random_stuff").exists()
    assert remove_tree(work, "core/src/random_stuff") is False
    assert remove_tree(work, "nowhere/at/all") is False


@pytest.mark.parametrize(
    "raw", [".GIT", ".Git/hooks", "sub/.GIT", ".GitHub/workflows", "DOCS", "Docs/a"]
)
def test_protected_globs_ignore_case(tmp_path: Path, raw: str) -> None:
    """`.GIT` or `DOCS` (the same directory on macOS) is refused like `.git` and `docs`."""
    with pytest.raises(InjuryRejected, match="protected"):
        confine(tmp_path, raw, protected=(*DEFAULT_PROTECTED, "docs/**"), allow_root=False)


ALIAS_SCRIPT = """
import os, subprocess, sys
from pathlib import Path
from auto_healer.errors import InjuryRejected
from auto_healer.paths import confine
root = Path(sys.argv[1])
(root / "alias").mkdir()
subprocess.run(["mount", "--bind", str(root / ".git"), str(root / "alias")], check=True)
for raw in ("alias", "alias/hooks"):
    try:
        confine(root, raw, allow_root=False)
    except InjuryRejected as exc:
        print("refused:", exc)
    else:
        print("ACCEPTED", raw)
"""


def test_an_alias_of_dot_git_is_refused(tmp_path: Path) -> None:
    """A directory that is `.git` under another name (a bind mount here) is refused."""
    _, work = make_repo(tmp_path, SEED)
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private bind mount")
    argv = ["unshare", "-Urm", sys.executable, "-c", ALIAS_SCRIPT, str(work)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 and "mount" in done.stderr + done.stdout:
        pytest.skip(f"no private bind mount here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused:") == 2, done.stdout
    assert "under another name" in done.stdout
