"""`format_code`: run a formatter on the affected path and keep what it changed.

The formatter runs on a scratch copy of the affected files (plus the config files it reads), so
the checkout is untouched until the plan is applied, and the dry-run shows the exact diff. It is
an argv list, never a shell, with a timeout. Only files git tracks are formatted (never ignored
or untracked ones), and only regular files: every read is `O_NOFOLLOW` from the checkout root,
so a symlink never brings content from outside into the plan. After the push the heal holds
when the formatter's check mode passes on the path's files as the remote head has them (copied
out of its tree with their config files; a custom `command` has no check mode: it is run on the
copy, which must come out unchanged).
"""

from __future__ import annotations

import asyncio
import difflib
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field, field_validator

from auto_healer.actions import ActionOptions, StepContext, StepPlan, VerifyContext, register
from auto_healer.confinement import confine_cached
from auto_healer.errors import HealFailed, InjuryRejected, TransientError
from auto_healer.outcomes import FileChange
from auto_healer.paths import first_protected, parent_dir

CONFIG_FILES = (
    "pyproject.toml",
    "ruff.toml",
    ".ruff.toml",
    "setup.cfg",
    "tox.ini",
    ".editorconfig",
)
FORMATTERS: dict[str, list[str]] = {
    "ruff": [sys.executable, "-m", "ruff", "format", "--no-cache", "{path}"],
    "black": [sys.executable, "-m", "black", "--quiet", "{path}"],
}
CHECKS: dict[str, list[str]] = {
    "ruff": [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "{path}"],
    "black": [sys.executable, "-m", "black", "--check", "--quiet", "{path}"],
}


class FormatCodeOptions(ActionOptions):
    """Options of `format_code`."""

    formatter: Literal["ruff", "black"] = Field(default="ruff", description="A known formatter.")
    command: list[str] | None = Field(
        default=None,
        description="An argv list that replaces `formatter`; `{path}` is the affected path.",
    )
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_files: int = Field(default=1000, ge=1, le=1_000_000)

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(isinstance(a, str) and a for a in value)):
            raise ValueError("must be a non-empty list of non-empty strings (an argv, no shell)")
        return value

    def argv(self, path: str) -> list[str]:
        return _fill(self.command or FORMATTERS[self.formatter], path)

    def check_argv(self, path: str) -> list[str] | None:
        """The formatter's check mode for `path` (None for a `command`: it has none)."""
        return None if self.command else _fill(CHECKS[self.formatter], path)


def _fill(template: list[str], path: str) -> list[str]:
    if path.startswith("-"):  # a file called `--config=x` must not become an option
        path = f"./{path}"
    return [arg.replace("{path}", path) for arg in template]


@register
class FormatCode:
    """Format the injury's `affected_path` (a file or a directory)."""

    name = "format_code"
    options_model = FormatCodeOptions

    async def plan(self, ctx: StepContext, options: FormatCodeOptions) -> StepPlan:
        raw = ctx.injury.injury.affected_path
        target = confine_cached(ctx.root, raw, protected=ctx.protected, allow_root=True)
        if target.absolute.is_symlink():
            # Writing the formatted bytes would replace the link with a file.
            raise InjuryRejected(f"affected_path {raw!r} is a symlink; refusing to format it")
        if not target.absolute.exists():
            return StepPlan(summary=f"{target.relative} does not exist: nothing to format")
        files = _files(ctx.root, target.relative, options.max_files, ctx.protected)
        if not files:
            return StepPlan(
                summary=f"{target.relative} has no tracked files to format: nothing to heal"
            )
        with tempfile.TemporaryDirectory(prefix="auto-healer-fmt-") as scratch:
            _copy(ctx.root, Path(scratch), target.relative, files)
            await _run(options.argv(target.relative), Path(scratch), options.timeout_s)
            write: dict[str, bytes] = {}
            diffs: list[str] = []
            for rel, before in files.items():
                after = (Path(scratch) / rel).read_bytes()
                if after != before:
                    write[rel] = after
                    diffs.append(_diff(rel, before, after))
        if not write:
            return StepPlan(summary=f"{target.relative} is already formatted: nothing to heal")
        return StepPlan(
            summary=f"format {target.relative} ({len(write)} of {len(files)} files changed)",
            write=write,
            files=[FileChange(rel, "modify") for rel in write],
            diff="".join(diffs),
        )

    async def verify(self, ctx: VerifyContext, options: FormatCodeOptions) -> str | None:
        tree, rel = ctx.tree, ctx.path
        files = [b for b in await tree.blobs(rel) if not first_protected(b.path, ctx.protected)]
        if not files:
            return None  # nothing left there to be unformatted
        parts = PurePosixPath(rel).parts if rel != "." else ()
        if len(files) == 1 and files[0].path == rel:
            parts = parts[:-1]  # a file: the config files of the directories above it
        dirs = [PurePosixPath(*parts[:i]) for i in range(len(parts) + 1)]
        configs = await tree.blobs(*((d / name).as_posix() for d in dirs for name in CONFIG_FILES))
        with tempfile.TemporaryDirectory(prefix="auto-healer-verify-") as scratch:
            await tree.copy_out(configs, Path(scratch))
            before = await tree.copy_out(files, Path(scratch))
            check = options.check_argv(rel)
            if check is not None:
                code, lines = await _spawn(check, Path(scratch), options.timeout_s)
                said = lines[-1] if lines else f"exit {code}"  # the summary line
                return None if code == 0 else f"the formatter's check fails on {rel}: {said}"
            await _run(options.argv(rel), Path(scratch), options.timeout_s)
            changed = [f for f, data in before.items() if (Path(scratch) / f).read_bytes() != data]
        return f"not formatted: {', '.join(changed[:5])}" if changed else None


def _files(root: Path, rel: str, max_files: int, protected: tuple[str, ...]) -> dict[str, bytes]:
    """The tracked regular files under the target and their bytes (links, protected left alone).

    `git ls-files` names them, so ignored and untracked files are never rewritten.
    """
    argv = ["git", "-c", "core.fsmonitor=false", "-C", str(root), "--literal-pathspecs"]
    try:
        done = subprocess.run(
            [*argv, "ls-files", "-z", "--", rel], capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HealFailed(f"git ls-files failed: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-2:]
        raise HealFailed(f"git ls-files failed: {' | '.join(tail)}")
    found: dict[str, bytes] = {}
    for name in done.stdout.split(b"\0"):
        path = os.fsdecode(name)
        if not path or first_protected(path, protected):
            continue
        content = read_regular(root, path)
        if content is None:
            continue
        found[path] = content
        if len(found) > max_files:
            raise InjuryRejected(f"{rel} has more than max_files={max_files} files to format")
    return dict(sorted(found.items()))


def read_regular(root: Path, rel: str) -> bytes | None:
    """The bytes of `rel` if it is a regular file reached without any symlink, else None.

    A symlinked directory on the way is refused (`InjuryRejected`); a FIFO never blocks.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        with parent_dir(root, rel) as (dir_fd, name):
            fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the file itself is a symlink
            return None
        raise HealFailed(f"cannot read {rel}: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


def _copy(root: Path, scratch: Path, rel: str, files: dict[str, bytes]) -> None:
    """Copy the files and every formatter config file between the root and the target."""
    parts = Path(rel).parts if rel != "." else ()
    if parts and (root / rel).is_file():
        parts = parts[:-1]  # a file: the directories above it
    dirs = [Path(*parts[:i]) for i in range(len(parts) + 1)]
    for directory in dirs:
        for name in CONFIG_FILES:
            content = read_regular(root, (directory / name).as_posix())
            if content is not None:
                (scratch / directory).mkdir(parents=True, exist_ok=True)
                (scratch / directory / name).write_bytes(content)
    for f, content in files.items():
        (scratch / f).parent.mkdir(parents=True, exist_ok=True)
        (scratch / f).write_bytes(content)


async def _run(argv: list[str], cwd: Path, timeout_s: float) -> None:
    """Run the formatter; a timeout may pass, a non-zero exit will not."""
    code, lines = await _spawn(argv, cwd, timeout_s)
    if code != 0:
        raise HealFailed(f"formatter exited {code}: {' | '.join(lines[-3:])}")


async def _spawn(argv: list[str], cwd: Path, timeout_s: float) -> tuple[int, list[str]]:
    """Run the formatter: its exit status and the lines it wrote (stderr, else stdout)."""
    if shutil.which(argv[0]) is None:
        raise HealFailed(f"formatter {argv[0]!r} is not installed")
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TransientError(f"formatter timed out after {timeout_s:g}s") from None
    except BaseException:  # a heal cut off: the formatter must not write after the restore
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    text = (err.strip() or out).decode(errors="replace")
    return proc.returncode or 0, [line.strip() for line in text.splitlines() if line.strip()]


def _diff(rel: str, before: bytes, after: bytes) -> str:
    a = before.decode(errors="replace").splitlines(keepends=True)
    b = after.decode(errors="replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"a/{rel}", f"b/{rel}"))
