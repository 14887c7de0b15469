"""Our own clone of a remote (`REPO_URL`): made once in `WORK_DIR`, reused across restarts.

Each clone is held by a state lock for the life of the process, so two replicas never share a
working tree; the remote's URL is set again on reuse (credentials may have rotated).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import git

from auto_healer.gitfail import git_error, safe_ref
from auto_healer.statelock import StateLock

NETWORK_TIMEOUT_S = 300.0  # a fetch or push that hangs is killed and retried, never waited on
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}  # a missing credential fails instead of prompting


def clone_repo(url: str, work_dir: Path, branch: str | None) -> tuple[git.Repo, StateLock, str]:
    """Clone `url` below `work_dir` (or reuse the clone there): the repo, its held lock and the
    branch to heal (`branch`, else the remote's default branch)."""
    name = safe_ref(url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))
    dest = work_dir / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
    lock = StateLock(
        dest.with_name(dest.name + ".lock"),
        what=f"the clone {dest}",
        hint="give each replica its own WORK_DIR",
    )
    try:
        if (dest / ".git").is_dir():
            repo = git.Repo(dest)
            repo.remotes.origin.set_url(url)
        else:
            work_dir.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.clone_from(
                url, dest, env=_GIT_ENV, kill_after_timeout=NETWORK_TIMEOUT_S
            )
    except git.GitCommandError as exc:
        lock.release()
        raise git_error(exc, "clone") from None
    if branch is None:
        head = repo.git.symbolic_ref("refs/remotes/origin/HEAD", "--short", with_exceptions=False)
        branch = head.removeprefix("origin/") if head else repo.active_branch.name
    return repo, lock, branch
