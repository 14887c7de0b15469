"""File operations that never follow a symlink, and the checkout generations they bump.

What is deleted or rewritten is reached by walking from the checkout root one directory at a
time with `O_NOFOLLOW` (`parent_dir`), so a component swapped for a symlink after a plan was
confined is refused instead of followed out of the checkout; a component that is the
repository's `.git` under another name (compared by inode) is refused too.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from auto_healer.errors import HealFailed, InjuryRejected

_GENERATIONS: dict[str, int] = {}


def generation(root: Path | str) -> int:
    """How many times the checkout at `root` was changed by us (sync, apply, restore); a
    confinement cached under an older generation is stale (`confinement.confine_cached`)."""
    return _GENERATIONS.get(os.fspath(root), 0)


def bump_generation(root: Path) -> None:
    """Say the working tree at `root` is about to change: cached confinements are dropped."""
    key = os.fspath(root)
    _GENERATIONS[key] = _GENERATIONS.get(key, 0) + 1


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def parent_dir(
    root: Path, rel: str, *, git_dir: os.stat_result | None = None
) -> Iterator[tuple[int, str]]:
    """Open the directory holding `rel` by walking from `root`, never following a symlink.

    Yields that directory's fd (closed on exit) and the last component's name. A component
    that is a symlink or not a directory is refused (`InjuryRejected`), and so is one that is
    `git_dir` (`git_dir_stat`) under another name; a missing one raises `FileNotFoundError`.
    """
    parts = rel.split("/")
    if rel in ("", ".") or any(p in ("", ".", "..") for p in parts):
        raise InjuryRejected(f"{rel!r} is not a normalised path below the checkout root")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InjuryRejected(
                        f"{rel!r}: {part!r} is a symlink or not a directory; refusing"
                    ) from None
                raise
            fd, old = child, fd
            os.close(old)
            _not_git_dir(os.fstat(fd), git_dir, rel)
        yield fd, parts[-1]
    finally:
        os.close(fd)


def remove_tree(root: Path, rel: str, *, git_dir: os.stat_result | None = None) -> bool:
    """Delete the directory `rel` below `root` without following any symlink; False if absent.

    Refuses (`InjuryRejected`) when `rel` or a directory above it is a symlink, no directory,
    or `git_dir` (see `parent_dir`).
    """
    if not shutil.rmtree.avoids_symlink_attacks:
        raise HealFailed("shutil.rmtree is not symlink-safe on this platform; refusing to delete")
    bump_generation(root)
    try:
        with parent_dir(root, rel, git_dir=git_dir) as (dir_fd, name):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            _not_git_dir(st, git_dir, rel)
            if not stat.S_ISDIR(st.st_mode):
                raise InjuryRejected(f"{rel!r} is a symlink or not a directory; refusing to delete")
            try:
                shutil.rmtree(name, dir_fd=dir_fd)
            except OSError as exc:  # a read-only subdirectory, say: the caller restores
                raise HealFailed(f"cannot delete {rel}: {exc}") from None
    except FileNotFoundError:  # a directory above it is gone
        return False
    except OSError as exc:
        raise HealFailed(f"cannot delete {rel}: {exc}") from None
    return True


def replace_file(
    root: Path, rel: str, content: bytes, *, git_dir: os.stat_result | None = None
) -> None:
    """Atomically replace the regular file `rel` below `root` by `content`, keeping its mode.

    Never follows a symlink: the file is reached with `parent_dir`, must be a regular file
    (`InjuryRejected` otherwise), and the new bytes go to a fresh `O_EXCL | O_NOFOLLOW` temporary
    file beside it that is renamed over it (and removed if anything fails).
    """
    bump_generation(root)
    try:
        with parent_dir(root, rel, git_dir=git_dir) as (dir_fd, name):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            _not_git_dir(st, git_dir, rel)  # `.git` may be a file (a worktree's, a submodule's)
            mode = st.st_mode
            if not stat.S_ISREG(mode):
                raise InjuryRejected(f"{rel!r} is a symlink or not a regular file; refusing")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            for _ in range(100):
                tmp = f".auto-healer-{secrets.token_hex(8)}.tmp"
                with suppress(FileExistsError):
                    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
                    break
            else:
                raise HealFailed(f"cannot create a temporary file beside {rel}")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
                    os.fchmod(out.fileno(), stat.S_IMODE(mode))
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
    except FileNotFoundError:
        raise HealFailed(f"cannot rewrite {rel}: it no longer exists") from None
    except OSError as exc:
        raise HealFailed(f"cannot rewrite {rel}: {exc}") from None


def git_dir_stat(root: Path) -> os.stat_result | None:
    """The `stat` of `root/.git` (None: none), for `parent_dir` to refuse it by any name."""
    try:
        return os.stat(os.path.join(root, ".git"))  # `root / ".git"` builds a Path each time
    except OSError:
        return None


def _not_git_dir(st: os.stat_result, git_dir: os.stat_result | None, rel: str) -> None:
    if git_dir is not None and os.path.samestat(st, git_dir):
        raise InjuryRejected(f"{rel!r} reaches the repository's .git under another name")
