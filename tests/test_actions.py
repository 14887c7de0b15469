"""Actions plan on a real checkout without touching it: delete_directory, format_code, escalate."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from auto_healer.actions import ActionOptions, StepContext, StepPlan, action_names, get_action
from auto_healer.actions.delete_directory import DeleteDirectoryOptions
from auto_healer.actions.escalate import EscalateOptions
from auto_healer.actions.format_code import FormatCodeOptions
from auto_healer.contracts import parse_injury_obj
from auto_healer.errors import ConfigError, HealFailed, InjuryRejected, TransientError
from auto_healer.paths import DEFAULT_PROTECTED

from tests.conftest import git, injury, tree_digest

Repo = tuple[Path, Path]


def plan(
    work: Path,
    action: str,
    path: str,
    options: ActionOptions,
    protected: tuple[str, ...] = DEFAULT_PROTECTED,
) -> StepPlan:
    """Run one action's plan on the checkout, asserting it changed nothing there."""
    kind = "unformatted_code" if action == "format_code" else "unauthorized_directory"
    ctx = StepContext(parse_injury_obj(injury(path, kind)), work, protected)
    before = tree_digest(work)
    try:
        return asyncio.run(get_action(action).plan(ctx, options))
    finally:
        assert tree_digest(work) == before, "planning touched the checkout"


def test_registry_knows_the_three_actions_and_hints() -> None:
    """The registry holds the built-in actions; an unknown name gets a did-you-mean."""
    assert action_names() == ["delete_directory", "escalate", "format_code"]
    with pytest.raises(ConfigError, match="did you mean 'escalate'"):
        get_action("escalte")


def test_delete_plans_every_file_of_the_directory(repo: Repo) -> None:
    """delete_directory lists tracked and untracked (ignored) files, links not followed."""
    _, work = repo
    stuff = work / "core/src/random_stuff"
    (stuff / "__pycache__").mkdir()
    (stuff / "__pycache__/hack.cpython-311.pyc").write_bytes(b"\0")
    (stuff / "link").symlink_to("../app.py")
    got = plan(work, "delete_directory", "core/src/random_stuff/", DeleteDirectoryOptions())
    assert got.delete == ["core/src/random_stuff"]
    assert sorted(f.path for f in got.files) == [
        "core/src/random_stuff/__pycache__/hack.cpython-311.pyc",
        "core/src/random_stuff/hack.py",
        "core/src/random_stuff/link",
        "core/src/random_stuff/notes.txt",
    ]
    assert {f.change for f in got.files} == {"delete"}


def test_delete_of_an_absent_directory_is_a_noop(repo: Repo) -> None:
    """An absent directory is already healthy: an empty plan."""
    got = plan(repo[1], "delete_directory", "core/src/gone", DeleteDirectoryOptions())
    assert got.noop
    assert "already absent" in got.summary


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("core/src/app.py", "not a directory"),
        ("core/src/linked", "not a directory"),
        ("big", "more than max_files=3"),
        ("core/src/nested", "protected by '\\*\\*/.git"),
        ("/etc", "absolute"),
        ("core/../..", "'..'"),
        (".", "root"),
        (".git", "protected"),
        ("docs", "protected by 'docs/\\*\\*'"),
    ],
)
def test_delete_refuses_unsafe_targets(repo: Repo, path: str, why: str) -> None:
    """Files, symlinks, too many files, nested .git, absolute, `..`, root, protected: refused."""
    _, work = repo
    (work / "core/src/linked").symlink_to("random_stuff")
    (work / "core/src/nested/.git").mkdir(parents=True)
    (work / "docs").mkdir()
    (work / "docs/readme.md").write_text("keep")
    (work / "big").mkdir()
    for i in range(4):
        (work / "big" / f"{i}.txt").write_text(str(i))
    with pytest.raises(InjuryRejected, match=why):
        plan(
            work,
            "delete_directory",
            path,
            DeleteDirectoryOptions(max_files=3),
            (*DEFAULT_PROTECTED, "docs/**"),
        )


def test_escalate_plans_an_escalation(repo: Repo) -> None:
    """escalate heals nothing and carries its reason."""
    got = plan(repo[1], "escalate", "x", EscalateOptions(reason="humans only"))
    assert got.escalate == "humans only"
    assert not got.delete
    assert not got.write


def test_format_plans_the_real_ruff_output_with_a_diff(repo: Repo) -> None:
    """format_code runs real ruff on a scratch copy and plans the new bytes and a diff."""
    _, work = repo
    got = plan(work, "format_code", "core/src/messy.py", FormatCodeOptions())
    assert list(got.write) == ["core/src/messy.py"]
    assert got.write["core/src/messy.py"] == b'def add(a, b):\n    return a + b\n\n\nx = {"a": 1}\n'
    assert got.diff.startswith("--- a/core/src/messy.py\n+++ b/core/src/messy.py\n")
    assert "+def add(a, b):" in got.diff


def test_format_a_directory_changes_only_unformatted_files(repo: Repo) -> None:
    """On a directory, only the files ruff changes are planned."""
    got = plan(repo[1], "format_code", "core/", FormatCodeOptions())
    assert sorted(got.write) == ["core/src/messy.py", "core/src/random_stuff/hack.py"]
    assert "2 of 4 files changed" in got.summary


def test_format_of_formatted_or_absent_code_is_a_noop(repo: Repo) -> None:
    """Already formatted, absent, or file-less targets plan nothing."""
    _, work = repo
    (work / "empty").mkdir()
    for path in ("core/src/app.py", "core/src/gone.py", "empty"):
        assert plan(work, "format_code", path, FormatCodeOptions()).noop


def test_format_reads_the_projects_ruff_config(repo: Repo) -> None:
    """The formatter sees the checkout's config files (here: single quotes)."""
    _, work = repo
    (work / "ruff.toml").write_text('[format]\nquote-style = "single"\n')
    got = plan(work, "format_code", "core/src/messy.py", FormatCodeOptions())
    assert b"x = {'a': 1}" in got.write["core/src/messy.py"]


def test_a_failing_formatter_is_a_heal_failure(repo: Repo) -> None:
    """Code ruff cannot parse makes the step fail (HealFailed), checkout untouched."""
    _, work = repo
    (work / "core/src/broken.py").write_text("def (:\n")
    git(work, "add", "core/src/broken.py")
    with pytest.raises(HealFailed, match="formatter exited 2"):
        plan(work, "format_code", "core/src/broken.py", FormatCodeOptions())


def test_a_missing_formatter_is_a_heal_failure(repo: Repo) -> None:
    """A formatter that is not installed fails clearly."""
    options = FormatCodeOptions(command=["no-such-formatter-xyz", "{path}"])
    with pytest.raises(HealFailed, match="not installed"):
        plan(repo[1], "format_code", "core/src/messy.py", options)


def test_a_hanging_formatter_times_out(repo: Repo) -> None:
    """A formatter that hangs is killed at `timeout_s` (a transient failure)."""
    options = FormatCodeOptions(
        command=[sys.executable, "-c", "import time; time.sleep(30)", "{path}"], timeout_s=0.3
    )
    with pytest.raises(TransientError, match=r"timed out after 0\.3s"):
        plan(repo[1], "format_code", "core/src/messy.py", options)


def test_the_formatter_gets_an_argv_never_a_shell(repo: Repo) -> None:
    """Shell metacharacters in a path stay one argument: nothing else runs."""
    _, work = repo
    evil = "core/src/$(touch PWNED);touch PWNED2.py"
    (work / evil).parent.mkdir(parents=True, exist_ok=True)
    (work / evil).write_text("x  =  1\n")
    git(work, "add", "--", evil)
    got = plan(work, "format_code", evil, FormatCodeOptions())
    assert got.write == {evil: b"x = 1\n"}
    assert not list(work.rglob("PWNED*"))


def test_a_dash_path_is_not_an_option(repo: Repo) -> None:
    """A file called `-x.py` is formatted as a file, not passed to ruff as a flag."""
    _, work = repo
    (work / "-x.py").write_text("y  =  2\n")
    git(work, "add", "--", "-x.py")
    assert FormatCodeOptions().argv("-x.py")[-1] == "./-x.py"
    got = plan(work, "format_code", "-x.py", FormatCodeOptions())
    assert got.write == {"-x.py": b"y = 2\n"}


def test_format_refuses_a_symlink(repo: Repo) -> None:
    """A symlinked file is refused: writing would replace the link by a file."""
    _, work = repo
    (work / "core/src/alias.py").symlink_to("messy.py")
    with pytest.raises(InjuryRejected, match="symlink"):
        plan(work, "format_code", "core/src/alias.py", FormatCodeOptions())


def test_format_respects_max_files(repo: Repo) -> None:
    """More files than `max_files` under the target is refused."""
    with pytest.raises(InjuryRejected, match="max_files=2"):
        plan(repo[1], "format_code", "core", FormatCodeOptions(max_files=2))


def test_format_options_reject_a_shell_string() -> None:
    """`command` must be an argv list of non-empty strings."""
    with pytest.raises(ValueError, match="argv"):
        FormatCodeOptions(command=[])
    with pytest.raises(ValueError, match="argv"):
        FormatCodeOptions(command=["ruff", ""])


def test_every_builtin_action_is_known_whichever_module_was_imported_first() -> None:
    """Importing one action module first does not hide the other built-in actions."""
    import subprocess
    import sys

    code = (
        "import auto_healer.actions.format_code\n"
        "from auto_healer.actions import action_names\n"
        "print(action_names())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['delete_directory', 'escalate', 'format_code']"
