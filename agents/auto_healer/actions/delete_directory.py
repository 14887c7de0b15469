"""`delete_directory`: remove a directory the injury names, tracked and untracked files alike.

Safety is not negotiable: the path is confined to the checkout (no absolute paths, no `..`, no
symlinks leading out, never the root or `.git`), protected globs are refused, and so is a
directory with more than `max_files` files. A refusal rejects the injury with nothing touched.
After the push the heal holds when the remote head's tree has nothing at the path.
"""

from __future__ import annotations

import os
import stat

from pydantic import Field

from auto_healer.actions import ActionOptions, StepContext, StepPlan, VerifyContext, register
from auto_healer.confinement import UNSEEN, confine_stat
from auto_healer.errors import InjuryRejected
from auto_healer.outcomes import FileChange
from auto_healer.paths import first_protected


class DeleteDirectoryOptions(ActionOptions):
    """Options of `delete_directory`."""

    max_files: int = Field(default=1000, ge=1, le=1_000_000, description="Refuse above this.")


@register
class DeleteDirectory:
    """Delete the injury's `affected_path` directory."""

    name = "delete_directory"
    options_model = DeleteDirectoryOptions

    async def plan(self, ctx: StepContext, options: DeleteDirectoryOptions) -> StepPlan:
        return _plan(ctx, options)

    def plan_now(self, ctx: StepContext, options: DeleteDirectoryOptions) -> StepPlan:
        return _plan(ctx, options)

    async def verify(self, ctx: VerifyContext, options: DeleteDirectoryOptions) -> str | None:
        if not await ctx.tree.has(ctx.path):
            return None
        left = await ctx.tree.blobs(ctx.path)
        return f"{ctx.path} is still there ({len(left)} files)"


def _plan(ctx: StepContext, options: DeleteDirectoryOptions) -> StepPlan:
    """The plan, synchronously: a few `lstat`s and a bounded walk."""
    raw = ctx.injury.injury.affected_path
    target, st = confine_stat(ctx.root, raw, protected=ctx.protected, allow_root=False)
    if st is UNSEEN:
        try:
            st = os.lstat(target.absolute)
        except OSError:  # as `os.path.lexists` says
            st = None
    if st is None:
        return StepPlan(summary=f"{target.relative} is already absent: nothing to heal")
    if not stat.S_ISDIR(st.st_mode):  # a symlink too, even to a directory
        raise InjuryRejected(f"affected_path {raw!r} is not a directory")
    files = _walk(target.relative, target.absolute, options.max_files, ctx.protected)
    return StepPlan(
        summary=f"delete {target.relative}/ ({len(files)} files)",
        delete=[target.relative],
        files=[FileChange(f, "delete") for f in files],
    )


def _walk(
    rel: str, absolute: os.PathLike[str], max_files: int, protected: tuple[str, ...]
) -> list[str]:
    """Every file under the directory (links not followed), refusing protected ones and excess."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(absolute, followlinks=False):
        base = os.path.relpath(dirpath, absolute)
        prefix = rel if base == "." else f"{rel}/{base}"
        for name in sorted(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                filenames.append(name)  # a link to a directory is deleted as a link
        for name in sorted(filenames):
            path = f"{prefix}/{name}"
            hit = first_protected(path, protected)
            if hit:
                raise InjuryRejected(f"{path} inside the directory is protected by {hit!r}")
            files.append(path)
            if len(files) > max_files:
                raise InjuryRejected(f"directory {rel} has more than max_files={max_files} files")
        for name in dirnames:
            hit = first_protected(f"{prefix}/{name}", protected)
            if hit:
                raise InjuryRejected(
                    f"{prefix}/{name} inside the directory is protected by {hit!r}"
                )
    return files
