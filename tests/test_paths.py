"""Path confinement and globs, with property tests that run the real plan and apply."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from auto_healer.actions import StepContext
from auto_healer.actions.delete_directory import DeleteDirectory, DeleteDirectoryOptions
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury_obj
from auto_healer.demo import SEED, make_repo
from auto_healer.errors import InjuryRejected
from auto_healer.paths import (
    DEFAULT_PROTECTED,
    compile_glob,
    confine,
    glob_matches,
    globs_may_overlap,
    normalise,
)
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import git, injury

PROTECTED = (*DEFAULT_PROTECTED, "docs/**")


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("core/src/**", "core/src/a/b.py", True),
        ("core/src/**", "core/src", False),
        ("core/*", "core/a", True),
        ("core/*", "core/a/b", False),
        ("**/.git", "a/b/.git", True),
        ("**/.git", ".git", True),
        ("*.py", "a.py", True),
        ("a?c", "abc", True),
        ("a[!b]c", "abc", False),
        ("a[xy]c", "ayc", True),
        ("docs/", "docs", True),
        (".git/**", ".git/\n", True),
    ],
)
def test_glob_semantics(pattern: str, path: str, hit: bool) -> None:
    """`**` spans directories, `*`/`?` stay within one, classes and negation work."""
    assert glob_matches(pattern, path) is hit


@pytest.mark.parametrize("bad", ["", "/abs/**", "a/../b", "a**", "**b/c", "a[bc", "a[b/c]d"])
def test_bad_globs_are_errors(bad: str) -> None:
    """Absolute, `..`, partial-segment `**`, unclosed or slashed classes are rejected."""
    with pytest.raises(ValueError, match="glob"):
        compile_glob(bad)


def test_glob_overlap_is_conservative() -> None:
    """Overlap is False only when provably disjoint."""
    assert globs_may_overlap("core/**", "core/src/*")
    assert globs_may_overlap("core/src/x", "core/**")
    assert not globs_may_overlap("core/**", "docs/**")
    assert not globs_may_overlap("a/b", "a/c")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/etc", "absolute"),
        ("~/x", "absolute"),
        ("C:/x", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a\\..\\x", "backslash"),
        ("a\x00b", "NUL"),
        ("", "empty"),
    ],
)
def test_normalise_refuses_unsafe_shapes(raw: str, why: str) -> None:
    """Absolute, `..`, backslash, NUL and empty paths are refused with the reason."""
    with pytest.raises(InjuryRejected, match=why):
        normalise(raw)


def test_normalise_collapses_dots_and_slashes() -> None:
    """`./a//b/` is `a/b`; only dots is the root."""
    assert normalise("./a//b/") == "a/b"
    assert normalise("./") == "."


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A checkout-like root with symlinks leading inside, outside and nowhere."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "core" / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "docs").mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside)
    (root / "out_abs").symlink_to("/etc")
    (root / "inner").symlink_to("core")
    (root / "to_git").symlink_to(".git")
    (root / "loop").symlink_to("loop")
    return root


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("out", "symlink leading outside"),
        ("out/x", "symlink leading outside"),
        ("out_abs/passwd", "symlink leading outside"),
        ("inner/sub", "goes through a symlink"),
        ("to_git", "protected"),
        (".git", "protected"),
        (".git/hooks", "protected"),
        ("core/.git", "protected"),
        (".github/workflows", "protected"),
        ("docs/a", "protected"),
        ("docs", "protected"),
        (".git/\n", "protected"),
        (".", "root"),
        ("core/..", "'..'"),
        ("loop/x", "cannot be resolved|symlink"),
        ("x" * 300, "cannot be resolved"),
    ],
)
def test_confine_refuses(tree: Path, raw: str, why: str) -> None:
    """Symlinks out, symlinks on the way, `.git`, protected globs and the root are refused."""
    with pytest.raises(InjuryRejected, match=why):
        confine(tree, raw, protected=PROTECTED, allow_root=False)


def test_confine_accepts_paths_inside(tree: Path) -> None:
    """An ordinary path inside resolves to itself; the root only when allowed."""
    got = confine(tree, "./core/sub/", protected=PROTECTED, allow_root=False)
    assert got.relative == "core/sub"
    assert got.absolute == tree.resolve() / "core" / "sub"
    assert confine(tree, ".", protected=PROTECTED, allow_root=True).relative == "."


_SEGMENTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        ".git",
        ".github",
        "victim",
        "sub",
        "out",
        "inner",
        "to_git",
        "docs",
        "core",
        "é",
        "ñ/..",
        "\x00",
        "~",
        "C:",
        "\\",
        "*",
        ":(top)",
        "-rf",
        " ",
        "\n",
        "victim/../..",
    ]
)
_NEAR = st.sampled_from(["victim", "victim/sub", "inner", "out", "out_rel", "core", "to_git"])
_PATHS = st.one_of(
    _NEAR,
    st.tuples(st.sampled_from(["", "./", "/", "../", "victim/../"]), _NEAR).map("".join),
    st.lists(_SEGMENTS, min_size=1, max_size=5).map("/".join),
    st.lists(_SEGMENTS, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
    st.text(max_size=12),
)


@pytest.fixture(scope="module")
def static_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree the pure confine property runs against (nothing is ever written there)."""
    root = tmp_path_factory.mktemp("static")
    (root / "victim" / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    for name, target in (("out", "/"), ("inner", "victim"), ("to_git", ".git")):
        (root / name).symlink_to(target)
    return root


@given(_PATHS)
@settings(max_examples=300, deadline=None)
def test_confine_never_leaves_the_root(static_tree: Path, raw: str) -> None:
    """Property: whatever the path, confine either refuses it or returns one inside, unprotected."""
    try:
        got = confine(static_tree, raw, protected=PROTECTED, allow_root=True)
    except InjuryRejected:
        return
    assert got.absolute.resolve().is_relative_to(static_tree.resolve())
    parts = Path(got.relative).parts
    assert ".git" not in parts
    assert not parts or parts[0] not in (".github", "docs")
    assert got.relative == "." or got.absolute.resolve() != static_tree.resolve()


def _snapshot(path: Path) -> dict[str, str]:
    """Every entry under a path (not following links) with a digest of its content or target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(path).as_posix()
            if full.is_symlink():
                out[rel] = "->" + os.readlink(full)
            elif full.is_file():
                out[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Checkout]:
    """A real checkout with a victim directory, symlinks in and out, and a sentinel tree outside."""
    base = tmp_path_factory.mktemp("sandbox")
    outside = base / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("do not touch")
    (outside / "deep" / "x.py").write_text("x = 1\n")
    files = {
        **SEED,
        "victim/a.txt": "a",
        "victim/sub/b.txt": "b",
        "docs/index.md": "doc",
        ".github/workflows/ci.yml": "on: push",
        "core/keep.py": "keep = 1\n",
    }
    _remote, work = make_repo(base, files)
    for name, target in (
        ("out", str(outside)),
        ("out_rel", "../outside"),
        ("inner", "victim"),
        ("to_git", ".git"),
    ):
        (work / name).symlink_to(target)
    git(work, "add", "-A")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "links")
    return outside, work, Checkout.open(work)


@given(_PATHS)
@example("victim")
@example("./victim//sub/")
@example("core")
@example("inner/sub")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_delete_plan_and_apply_stay_inside(sandbox: tuple[Path, Path, Checkout], raw: str) -> None:
    """Property: the real delete plan+apply never changes anything but the one named directory."""
    outside, work, checkout = sandbox
    try:
        parsed = parse_injury_obj(injury(raw))
    except InjuryRejected:
        return
    outside_before, inside_before = _snapshot(outside), _snapshot(work)
    ctx = StepContext(injury=parsed, root=work, protected=PROTECTED)
    try:
        plan = asyncio.run(DeleteDirectory().plan(ctx, DeleteDirectoryOptions()))
    except InjuryRejected:
        assert _snapshot(work) == inside_before
        return
    if not plan.delete:
        return
    [named] = plan.delete
    event(f"deleted {named}")
    assert named == normalise(raw)
    try:
        checkout.apply(plan.delete, plan.write, PROTECTED)
        assert _snapshot(outside) == outside_before
        after = _snapshot(work)
        changed = {p for p in inside_before if after.get(p) != inside_before[p]} | (
            after.keys() - inside_before.keys()
        )
        changed -= {".git/index"}
        assert changed, "a planned delete removed nothing"
        assert all(p == named or p.startswith(named + "/") for p in changed), changed
        assert named.split("/")[0] not in (".git", ".github", "docs")
    finally:
        git(work, "reset", "-q", "--hard", "HEAD")
        git(work, "clean", "-qfdx")
