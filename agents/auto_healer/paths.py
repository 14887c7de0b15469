"""Path confinement and path globs: the safety rules every action obeys.

A network message names a path; this module decides whether that path is one the auto-healer
may touch. Everything is resolved inside the checkout and refused with a reason otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from auto_healer.errors import ConfigError, InjuryRejected

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


def validate_globs(patterns: list[str]) -> list[str]:
    """Compile every glob now so a bad one is a load-time error."""
    for pattern in patterns:
        compile_glob(pattern)
    return patterns


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


@dataclass(frozen=True)
class Confined:
    """A path proven to lie inside the checkout: absolute and checkout-relative forms."""

    absolute: Path
    relative: str

    @property
    def is_root(self) -> bool:
        return self.relative == "."


def normalise(raw: str) -> str:
    """Check the shape of an untrusted relative path and return it in POSIX normal form."""
    if not raw or "\x00" in raw:
        raise InjuryRejected("affected_path is empty or contains a NUL byte")
    if "\\" in raw:
        raise InjuryRejected(f"affected_path {raw!r} contains a backslash")
    if raw.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", raw):
        raise InjuryRejected(f"affected_path {raw!r} is absolute; it must be relative")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InjuryRejected(f"affected_path {raw!r} contains '..', which could escape")
    return "/".join(parts) or "."


def confine(
    root: Path, raw: str, *, protected: tuple[str, ...] = DEFAULT_PROTECTED, allow_root: bool
) -> Confined:
    """Resolve an untrusted path inside `root`, refusing escapes, symlinks out, and protection.

    Raises `InjuryRejected` with the reason; never touches the file system beyond `lstat`.
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
    return Confined(Path(candidate), rel)


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


def first_protected(path: str, protected: tuple[str, ...]) -> str | None:
    """The first protected glob that a relative path matches or lies above, if any.

    `docs` is protected by `docs/**`: removing it would remove everything the glob protects.
    """
    above = path.rstrip("/") + "/"
    return next(
        (g for g in protected if glob_matches(g, path) or literal_prefix(g).startswith(above)),
        None,
    )


def require_globs(patterns: list[str], where: str) -> list[str]:
    """Validate globs for a config file, turning a bad one into a `ConfigError`."""
    try:
        return validate_globs(patterns)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
