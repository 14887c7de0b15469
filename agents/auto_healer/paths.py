"""Path confinement, path globs, and file operations that never follow a symlink.

A network message names a path; this module decides whether that path is one the auto-healer
may touch. Everything is resolved inside the checkout and refused with a reason otherwise.
What is then deleted or rewritten is reached by file descriptor (`fsops.parent_dir`, re-exported
here), so a component swapped for a symlink after the check is refused instead of followed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path, PurePosixPath

from auto_healer.confined import Confined as Confined
from auto_healer.errors import InjuryRejected
from auto_healer.fsops import bump_generation as bump_generation
from auto_healer.fsops import generation as generation
from auto_healer.fsops import git_dir_stat as git_dir_stat
from auto_healer.fsops import parent_dir as parent_dir
from auto_healer.fsops import remove_tree as remove_tree
from auto_healer.fsops import replace_file as replace_file

DEFAULT_PROTECTED = (".git", ".git/**", "**/.git", "**/.git/**", ".github", ".github/**")


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: `**` spans directories, `*` and `?` stay within one, `[..]` a class.

    Raises `ValueError` naming what is wrong with a bad pattern.
    """
    if not pattern or pattern.startswith("/") or "\x00" in pattern:
        raise ValueError(f"glob {pattern!r} must be a non-empty relative path")
    pattern = pattern.rstrip("/")  # `docs/` means the directory `docs`
    if ".." in PurePosixPath(pattern).parts:
        raise ValueError(f"glob {pattern!r} must not contain '..'")
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            before_ok = i == 0 or pattern[i - 1] == "/"
            after = pattern[i + 2 : i + 3]
            if not before_ok or after not in ("", "/"):
                raise ValueError(f"glob {pattern!r}: '**' must be a whole path segment")
            if after == "/":
                out.append("(?:.*/)?")
                i += 3
            else:
                out.append(".*")
                i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j == -1:
                raise ValueError(f"glob {pattern!r}: unclosed '['")
            body = pattern[i + 1 : j]
            if "/" in body:
                raise ValueError(f"glob {pattern!r}: '/' inside a [class]")
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        # DOTALL: a name may hold a newline, and `.git/\n` must still be under `.git/**`.
        return re.compile("".join(out) + r"/?\Z", re.DOTALL)
    except re.error as exc:
        raise ValueError(f"glob {pattern!r}: {exc}") from None


def glob_matches(pattern: str, path: str) -> bool:
    """Whether a checkout-relative POSIX path matches a glob."""
    return compile_glob(pattern).match(path) is not None


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard."""
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return pattern[:cut]


def globs_may_overlap(a: str, b: str) -> bool:
    """Conservatively, whether two globs could match one path (False only when provably not)."""
    pa, pb = literal_prefix(a), literal_prefix(b)
    if pa == a and pb == b:
        return a.rstrip("/") == b.rstrip("/")
    if pa == a:
        return glob_matches(b, a)
    if pb == b:
        return glob_matches(a, b)
    return pa.startswith(pb) or pb.startswith(pa)


_DRIVE = re.compile(r"^[A-Za-z]:")


def with_parents(paths: Iterable[str]) -> set[str]:
    """The paths and every directory above them, so a deleted directory is found in O(1)."""
    out: set[str] = set()
    for path in paths:
        while path and path not in out:
            out.add(path)
            path = path.rpartition("/")[0]
    return out


@lru_cache(maxsize=4096)  # an injury's path is normalised on intake and again by its plan
def normalise(raw: str) -> str:
    """Check the shape of an untrusted relative path and return it in POSIX normal form."""
    if not raw or "\x00" in raw:
        raise InjuryRejected("affected_path is empty or contains a NUL byte")
    if "\\" in raw:
        raise InjuryRejected(f"affected_path {raw!r} contains a backslash")
    if raw.startswith(("/", "~")) or _DRIVE.match(raw):
        raise InjuryRejected(f"affected_path {raw!r} is absolute; it must be relative")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InjuryRejected(f"affected_path {raw!r} contains '..', which could escape")
    return "/".join(parts) or "."


def confine(
    root: Path, raw: str, *, protected: tuple[str, ...] = DEFAULT_PROTECTED, allow_root: bool
) -> Confined:
    """Resolve an untrusted path inside `root`, refusing escapes, symlinks out, and protection.

    Raises `InjuryRejected` with the reason; never touches the file system beyond `(l)stat`.
    """
    rel = normalise(raw)
    root = root.resolve()
    if rel == ".":
        if not allow_root:
            raise InjuryRejected("affected_path is the checkout root; refusing to touch it")
        return Confined(root, ".")
    candidate = root / rel
    try:
        resolved_rel = _resolve_inside(root, candidate, raw)
    except (OSError, RuntimeError) as exc:  # name too long, symlink loop, permission
        raise InjuryRejected(f"affected_path {raw!r} cannot be resolved: {exc}") from None
    for path in {rel, resolved_rel}:
        hit = first_protected(path, protected)
        if hit:
            raise InjuryRejected(f"affected_path {raw!r} is protected by {hit!r}")
    if _within_git_dir(root, resolved_rel):
        raise InjuryRejected(f"affected_path {raw!r} is the repository's .git under another name")
    return Confined(Path(candidate), rel)


def confine_text(raw: str, protected: tuple[str, ...] = DEFAULT_PROTECTED) -> str:
    """What `confine` checks without the file system: the normal form of `raw` below the root,
    or `InjuryRejected`. Only for a path then reached by `parent_dir` with `git_dir_stat`: the
    walk refuses every symlink on the way and `.git` by another name, so the path resolves to
    itself, and `confine`'s `realpath` and `lstat`s would only repeat it."""
    rel = normalise(raw)
    if rel == ".":
        raise InjuryRejected("affected_path is the checkout root; refusing to touch it")
    hit = first_protected(rel, protected)
    if hit:
        raise InjuryRejected(f"affected_path {raw!r} is protected by {hit!r}")
    return rel


def _resolve_inside(root: Path, candidate: Path, raw: str) -> str:
    """The checkout-relative form of `candidate` resolved, refusing any way out.

    A symlink may only be the last component (the actions refuse to follow it); one on the way
    would make git and the file system disagree about what the path names.
    """
    current = root
    parts = candidate.relative_to(root).parts
    for i, part in enumerate(parts):
        current = current / part
        if current.is_symlink():
            if not current.resolve().is_relative_to(root):
                raise InjuryRejected(
                    f"affected_path {raw!r} goes through a symlink leading outside"
                )
            if i < len(parts) - 1:
                raise InjuryRejected(f"affected_path {raw!r} goes through a symlink")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise InjuryRejected(f"affected_path {raw!r} resolves outside the checkout")
    resolved_rel = resolved.relative_to(root).as_posix()
    if resolved_rel in ("", "."):
        raise InjuryRejected(f"affected_path {raw!r} resolves to the checkout root")
    return resolved_rel


def _within_git_dir(root: Path, resolved_rel: str) -> bool:
    """Whether the path or a directory above it is `root/.git` by another spelling.

    On a case-insensitive file system `.GIT` is `.git`; comparing inodes catches any alias.
    """
    try:
        git_dir = os.stat(root / ".git")
    except OSError:
        return False
    current = root
    for part in PurePosixPath(resolved_rel).parts:
        current = current / part
        try:
            if os.path.samestat(os.stat(current), git_dir):
                return True
        except OSError:
            return False
    return False


def first_protected(path: str, protected: tuple[str, ...]) -> str | None:
    """The first protected glob that a relative path matches or lies above, if any.

    `docs` is protected by `docs/**`: removing it would remove everything the glob protects.
    Both sides are casefolded: on a case-insensitive file system `DOCS` is `docs` (refusing
    `DOCS` on Linux too is the price, and a small one).
    """
    folded = path.casefold()
    above = folded.rstrip("/") + "/"
    anyone, ancestors, each = _protection(protected)
    if anyone.match(folded) is None and above not in ancestors:
        return None  # the common answer, in one match and one set lookup
    for g, pattern, prefix in each:
        if pattern.match(folded) is not None or prefix.startswith(above):
            return g
    return None


@lru_cache(maxsize=256)
def _protection(
    protected: tuple[str, ...],
) -> tuple[re.Pattern[str], frozenset[str], tuple[tuple[str, re.Pattern[str], str], ...]]:
    """Each protected glob with its casefolded pattern compiled and its literal prefix; and
    for the common case, all patterns as one, and every `dir/` some prefix starts with."""
    each = tuple((g, compile_glob(g.casefold()), literal_prefix(g.casefold())) for g in protected)
    anyone = re.compile("|".join(f"(?:{p.pattern})" for _, p, _ in each) or r"(?!)", re.DOTALL)
    ancestors = frozenset(
        prefix[: i + 1] for _, _, prefix in each for i, c in enumerate(prefix) if c == "/"
    )
    return anyone, ancestors, each
