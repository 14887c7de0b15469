"""The remote head, read without touching the working tree: fetch a branch's tip into a private
ref, list paths in its tree, and copy files out of it.

What a heal is checked against after its push (`verification`): not the checkout, which says
only what we did, but the commit the remote now has, which says what stuck. Every git call is
an argv (never a shell) with a timeout; the repository's hooks and fsmonitor never run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from auto_healer.errors import HealFailed
from auto_healer.paths import with_parents

VERIFY_REF = "refs/auto-healer/verify/"  # our own namespace: no branch or tracking ref moves
LOCAL_TIMEOUT_S = 120.0
_GIT = ("git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
_REGULAR = ("100644", "100755")  # blob modes of regular files (not links, not submodules)
PATHS_PER_LS = 2000  # paths per `ls-tree` of `RemoteTree.has`: far below any argv limit


async def run_git(
    root: Path, *args: str, stdin: bytes | None = None, timeout_s: float = LOCAL_TIMEOUT_S
) -> bytes:
    """Run git in `root` and return its stdout; `HealFailed` on a non-zero exit or a timeout."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = await asyncio.create_subprocess_exec(
        *_GIT,
        *args,
        cwd=root,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    except BaseException:  # a timeout or a cancelled heal: no git left running behind it
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
        doing = next(a for a in args if not a.startswith("-"))
        raise HealFailed(f"git {doing} failed: {tail or f'exit {proc.returncode}'}")
    return out


async def fetch_head(root: Path, remote: str, branch: str, *, timeout_s: float) -> str:
    """Fetch the tip of `branch` on `remote` into our private ref and return its commit."""
    ref = f"{VERIFY_REF}{branch}"
    await run_git(
        root,
        "fetch",
        "-q",
        "--no-write-fetch-head",
        remote,
        f"+refs/heads/{branch}:{ref}",
        timeout_s=timeout_s,
    )
    return (await run_git(root, "rev-parse", "--verify", f"{ref}^{{commit}}")).decode().strip()


async def head_of(root: Path, remote: str, branch: str, *, timeout_s: float) -> str | None:
    """The commit `branch` on `remote` points at now, asked of the remote (`ls-remote`: no
    objects move); None when it has no such branch."""
    out = await run_git(root, "ls-remote", remote, f"refs/heads/{branch}", timeout_s=timeout_s)
    for line in out.decode().splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


@dataclass(frozen=True)
class Blob:
    """A regular file in a tree: its path from the root and its object id."""

    path: str
    oid: str


class RemoteTree:
    """The tree of one commit of the remote, read through git plumbing only."""

    def __init__(self, root: Path, commit: str) -> None:
        self.root, self.commit = root, commit
        self._asked: dict[str, asyncio.Future[bool]] = {}  # paths waiting for the next `ls-tree`
        self._lister: asyncio.Task[None] | None = None

    async def has(self, path: str) -> bool:
        """Whether the tree holds `path` (a file, a directory, a link). The paths asked while
        one `ls-tree` runs are answered together by the next: a batch of heals costs a few git
        processes, not one per injury."""
        key = path.rstrip("/")
        if key in ("", "."):
            return bool(await self._ls(path, recursive=False))
        found = self._asked.get(key)
        if found is None:
            found = self._asked[key] = asyncio.get_running_loop().create_future()
            if self._lister is None or self._lister.done():
                self._lister = asyncio.create_task(self._list_asked())
        return await asyncio.shield(found)

    async def _list_asked(self) -> None:
        """Answer every path asked so far with one `ls-tree` (in chunks of a safe argv size)."""
        while self._asked:
            asked, self._asked = self._asked, {}
            try:
                names: list[str] = []
                keys = list(asked)
                for at in range(0, len(keys), PATHS_PER_LS):
                    listed = await self._ls(*keys[at : at + PATHS_PER_LS], recursive=False)
                    names += (entry.partition("\t")[2] for entry in listed)
            except Exception as exc:
                for found in asked.values():
                    found.set_exception(exc)
                continue
            except BaseException:  # cut off (the agent stops): so are those waiting
                for found in asked.values():
                    found.cancel()
                raise
            held = with_parents(names)  # the entries and each directory above them
            for key, found in asked.items():
                found.set_result(key in held)

    async def blobs(self, *paths: str) -> list[Blob]:
        """Every regular file at or under `paths` (links and submodules left out), sorted."""
        found = []
        for entry in await self._ls(*paths, recursive=True):
            meta, _, name = entry.partition("\t")
            mode, kind, oid = meta.split(" ")
            if kind == "blob" and mode in _REGULAR:
                found.append(Blob(name, oid))
        return sorted(found, key=lambda b: b.path)

    async def copy_out(self, blobs: Iterable[Blob], dest: Path) -> dict[str, bytes]:
        """Write the blobs under `dest` (one `cat-file --batch` for all); their bytes by path."""
        wanted = list(blobs)
        if not wanted:
            return {}
        out = await run_git(
            self.root, "cat-file", "--batch", stdin="".join(f"{b.oid}\n" for b in wanted).encode()
        )
        found: dict[str, bytes] = {}
        at = 0
        for blob in wanted:
            header_end = out.index(b"\n", at)
            size = int(out[at:header_end].split(b" ")[2])
            content = out[header_end + 1 : header_end + 1 + size]
            at = header_end + 1 + size + 1
            found[blob.path] = content
            target = dest / _safe(blob.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return found

    async def _ls(self, *paths: str, recursive: bool) -> list[str]:
        args = ["--literal-pathspecs", "ls-tree", "-z", "--full-tree"]
        out = await run_git(
            self.root, *args, *(["-r"] if recursive else []), self.commit, "--", *paths
        )
        return [os.fsdecode(e) for e in out.split(b"\0") if e]


def _safe(path: str) -> PurePosixPath:
    """A tree path as a relative path that cannot leave the scratch directory."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in pure.parts):
        raise HealFailed(f"the remote tree holds an unsafe path {path!r}")
    return pure
