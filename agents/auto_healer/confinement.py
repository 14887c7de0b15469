"""Confinement for plans, cached per (checkout generation, normalised directory).

A plan confines the injury's path (`paths.confine`): resolve, `lstat` every component, compare
with `.git`, match the protected globs. A burst of injuries under one directory repeats that
work for the same directories again and again. Here the directories above the path are proven
clean once per generation of the checkout (`paths.generation`, bumped by every sync, apply and
restore) and for at most `TTL_S` (a user's checkout planned as it is may change under us); the
last component is still `lstat`ed every time.

Only the clean case is answered from the cache: anything else (a symlink, `.git` under another
name, a protected path, an error) is handed to `paths.confine`, which gives the same answer or
refusal as ever. Nothing here is used to apply a plan: the checkout confines afresh and then
reaches the path by file descriptor (`paths.parent_dir`), whatever a plan saw.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from auto_healer.paths import (
    DEFAULT_PROTECTED,
    Confined,
    confine,
    first_protected,
    generation,
    normalise,
)

TTL_S = 1.0
MAX_ENTRIES = 4096
MAX_ANSWERS = 1024  # whole answers are larger: a burst repeats paths within seconds, or never

# (root as given, generation) -> (expiry, resolved root, stat of its .git or None, as a Path)
_roots: dict[tuple[str, int], tuple[float, str, os.stat_result | None, Path]] = {}
# (resolved root, generation, directory) -> when its "clean" verdict expires
_clean_dirs: dict[tuple[str, int, str], float] = {}
# (root as given, generation, raw path, protected, allow_root) -> when it expires, the answer
_answers: dict[tuple[str, int, str, tuple[str, ...], bool], tuple[float, Confined]] = {}
UNSEEN = os.stat_result((0,) * 10)  # `confine_stat` did not `lstat` the path this time


def confine_stat(
    root: Path, raw: str, *, protected: tuple[str, ...] = DEFAULT_PROTECTED, allow_root: bool
) -> tuple[Confined, os.stat_result | None]:
    """`confine_cached`, with the `lstat` of the path it made (None: absent), or `UNSEEN`
    when the answer came from the cache or from `paths.confine`: the caller looks itself."""
    now = time.monotonic()
    given = os.fspath(root)
    gen = generation(given)
    key = (given, gen, raw, protected, allow_root)
    hit = _answers.get(key)
    if hit is not None and hit[0] > now:
        return hit[1], UNSEEN
    confined, st = _confine(
        root, given, gen, raw, protected=protected, allow_root=allow_root, now=now
    )
    if len(_answers) >= MAX_ANSWERS:
        _answers.clear()
    _answers[key] = (now + TTL_S, confined)
    return confined, st


def confine_cached(
    root: Path, raw: str, *, protected: tuple[str, ...] = DEFAULT_PROTECTED, allow_root: bool
) -> Confined:
    """`paths.confine(root, raw, ...)`, with the directories above the path checked at most once
    per checkout generation (and `TTL_S`). Same result, same refusals."""
    return confine_stat(root, raw, protected=protected, allow_root=allow_root)[0]


def _confine(
    root: Path,
    given: str,
    gen: int,
    raw: str,
    *,
    protected: tuple[str, ...],
    allow_root: bool,
    now: float,
) -> tuple[Confined, os.stat_result | None]:
    """`given` is `root` as a string and `gen` its generation (each asked once per answer)."""
    rel = normalise(raw)
    if rel == ".":
        return confine(root, raw, protected=protected, allow_root=allow_root), UNSEEN
    resolved, git_dir, top = _root(root, given, gen, now)
    parent = rel.rpartition("/")[0]
    if parent and not _dir_clean(resolved, gen, parent, git_dir, now):
        return confine(root, raw, protected=protected, allow_root=allow_root), UNSEEN
    try:
        st: os.stat_result | None = os.lstat(f"{resolved}/{rel}")
    except FileNotFoundError:
        st = None
    except OSError:  # not a directory on the way, name too long: let confine say why
        return confine(root, raw, protected=protected, allow_root=allow_root), UNSEEN
    if st is not None and (
        stat.S_ISLNK(st.st_mode) or (git_dir is not None and os.path.samestat(st, git_dir))
    ):
        return confine(root, raw, protected=protected, allow_root=allow_root), UNSEEN
    if first_protected(rel, protected) is not None:
        return confine(root, raw, protected=protected, allow_root=allow_root), UNSEEN
    return Confined.under(top, rel), st


def _root(root: Path, given: str, gen: int, now: float) -> tuple[str, os.stat_result | None, Path]:
    key = (given, gen)
    hit = _roots.get(key)
    if hit is not None and hit[0] > now:
        return hit[1], hit[2], hit[3]
    resolved = str(root.resolve())
    try:
        git_dir: os.stat_result | None = os.stat(f"{resolved}/.git")
    except OSError:
        git_dir = None
    if len(_roots) >= MAX_ENTRIES:
        _roots.clear()
    _roots[key] = (now + TTL_S, resolved, git_dir, Path(resolved))
    return resolved, git_dir, Path(resolved)


def _dir_clean(
    resolved: str, gen: int, rel_dir: str, git_dir: os.stat_result | None, now: float
) -> bool:
    """Whether no component of `rel_dir` is a symlink or `.git` by another name (a missing one
    ends the walk: nothing below it exists). Cached per generation and `TTL_S`."""
    key = (resolved, gen, rel_dir)
    until = _clean_dirs.get(key)
    if until is not None and until > now:
        return True
    current = resolved
    for part in rel_dir.split("/"):
        current = f"{current}/{part}"
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            break
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode) or (git_dir is not None and os.path.samestat(st, git_dir)):
            return False
    if len(_clean_dirs) >= MAX_ENTRIES:
        _clean_dirs.clear()
    _clean_dirs[key] = now + TTL_S
    return True
