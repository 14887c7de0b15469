"""The git checkout a heal works on (GitPython): sync, apply a plan, commit, push, restore.

Rules that never bend: every path is re-confined before it is touched, the checkout is brought
to the remote head before a heal and left clean after a failed one, hooks of the repository are
not run, and nothing is ever force-pushed. Methods are synchronous; the healer runs them in a
worker thread, one heal per checkout at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import git

from auto_healer.clone import _GIT_ENV, NETWORK_TIMEOUT_S, clone_repo
from auto_healer.errors import ConfigError, TransientError
from auto_healer.fsops import bump_generation, generation, git_dir_stat, remove_tree, replace_file
from auto_healer.gitfail import git_error
from auto_healer.paths import confine_text
from auto_healer.settings import GitSettings
from auto_healer.statelock import StateLock

PUSH_RACE_BUDGET_S = 60.0  # how long a heal keeps pushing against a remote that keeps moving
_MIDWAY = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "SQUASH_MSG", "MERGE_MSG")


@dataclass(frozen=True)
class Identity:
    """Who the heal commits are by."""

    name: str = "auto-healer"
    email: str = "auto-healer@aura.hive"


class Checkout:
    """One working copy and the remote branch it heals."""

    def __init__(
        self, repo: git.Repo, *, branch: str, owned: bool, identity: Identity, remote: str
    ) -> None:
        self.repo = repo
        self.branch = branch
        self.owned = owned  # cloned by us: local changes may be discarded
        self.identity = identity
        self.remote = remote
        self.root = Path(repo.working_tree_dir or ".").resolve()
        self.network_timeout_s = NETWORK_TIMEOUT_S
        self.push_race_budget_s = PUSH_RACE_BUDGET_S  # see pushrace
        repo.git.update_environment(**_GIT_ENV)

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        branch: str | None = None,
        identity: Identity = Identity(),
        remote: str = "origin",
    ) -> Checkout:
        """Use an existing checkout; its current branch unless `branch` is given."""
        try:
            repo = git.Repo(path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ConfigError(f"{path}: not a git checkout") from None
        if repo.bare:
            repo.close()
            raise ConfigError(f"{path}: is a bare repository; give a checkout")
        if remote not in [r.name for r in repo.remotes]:
            repo.close()
            raise ConfigError(f"{path}: has no remote {remote!r} to push heals to")
        if branch is None:
            if repo.head.is_detached:
                repo.close()
                raise ConfigError(f"{path}: HEAD is detached; pass --branch")
            branch = repo.active_branch.name
        return cls(repo, branch=branch, owned=False, identity=identity, remote=remote)

    @classmethod
    def clone(
        cls,
        url: str,
        work_dir: Path,
        *,
        branch: str | None = None,
        identity: Identity = Identity(),
    ) -> Checkout:
        """Clone `url` into `work_dir` (or reuse an earlier clone of it there)."""
        repo, lock, branch = clone_repo(url, work_dir, branch)
        checkout = cls(repo, branch=branch, owned=True, identity=identity, remote="origin")
        checkout._lock = lock
        return checkout

    _lock: StateLock | None = None
    _clean_at: tuple[int, str] | None = None  # see `pushed_clean`

    def close(self) -> None:
        self.repo.close()
        if self._lock is not None:
            self._lock.release()

    # --- the heal cycle ---------------------------------------------------------------------

    def sync(self) -> str:
        """Bring the checkout to the remote head; return that commit.

        Our own clone is also cleaned. A user's checkout (`--repo`) keeps its untracked files
        (an injuries file, build output): only the heal's own paths are ever staged.
        """
        clean_at, self._clean_at = self._clean_at, None
        mine = clean_at[1] if clean_at == (generation(self.root), self.head()) else None
        bump_generation(self.root)
        self.fetch()
        upstream = f"{self.remote}/{self.branch}"
        if mine is not None and self._ref(f"refs/remotes/{upstream}") == mine:
            return mine  # our own push is still the remote head: nothing to reset or clean
        if not self.owned:
            # Transient, not a configuration error: an agent retries once the work is put away.
            if self.has_local_changes():
                raise TransientError(
                    f"{self.root}: has uncommitted changes to tracked files; commit or stash them"
                )
            local = f"refs/heads/{self.branch}"
            tip, remote_tip = self._ref(local), self._ref(f"refs/remotes/{upstream}")
            if tip is not None and tip != remote_tip:  # the same commit is 0 ahead
                ahead = self._git("rev-list", "--count", f"{upstream}..{local}")
                if int(ahead):
                    raise TransientError(
                        f"{self.root}: branch {self.branch} has {ahead} commits not on "
                        f"{upstream}; push or reset them first"
                    )
            if tip is not None and tip == remote_tip and self._on(local) and not self._midway():
                # Clean tracked files on the branch at the remote head: the checkout below
                # would change nothing (a fresh clone's first heal).
                return tip
        # -f: index and tracked files are reset to the upstream too (`reset --hard`, one process)
        self._git("checkout", "-q", "-f", "-B", self.branch, upstream)
        if self.owned:
            self._git("clean", "-q", "-fd")
            self._clean_at = (generation(self.root), self.head())  # as after our own push
        return self.head()

    def head(self) -> str:
        """The commit checked out, read from the ref files (no git process)."""
        return str(git.SymbolicReference.dereference_recursive(self.repo, "HEAD"))

    def _ref(self, ref: str) -> str | None:
        """The commit `ref` names, read from the ref files (no git process)."""
        try:
            return str(git.SymbolicReference.dereference_recursive(self.repo, ref))
        except ValueError:
            return None

    def _on(self, ref: str) -> bool:
        """Whether HEAD is the symbolic ref `ref`, read from the HEAD file (no git process)."""
        head = self.repo.head
        return not head.is_detached and head.reference.path == ref

    def _midway(self) -> bool:
        """Whether a merge, cherry-pick or revert is left open: `checkout -f` ends it, and a
        heal committed on it would be a merge of the user's work, or under another author."""
        return any(os.path.lexists(os.path.join(self.repo.git_dir, f)) for f in _MIDWAY)

    def pushed_clean(self, commit: str) -> None:
        """Say our own clone's HEAD is `commit`, just committed and pushed (or synced), with
        nothing touched since: its next sync skips the checkout and the clean while the remote
        still has it."""
        if self.owned and self.head() == commit:
            self._clean_at = (generation(self.root), commit)

    def at_own_push(self, commit: str) -> bool:
        """Whether our own clone is still at `commit`, its own push (`pushed_clean`), with
        nothing touched since: then a heal whose path locks were all held before that push
        began may start from it without a fetch (see `batch.Batcher._sync`)."""
        return self._clean_at == (generation(self.root), commit) and self.head() == commit

    def _ref_exists(self, ref: str) -> bool:
        """Whether `ref` names a commit, read from the ref files (no git process)."""
        try:
            git.SymbolicReference.dereference_recursive(self.repo, ref)
        except ValueError:
            return False
        return True

    def apply(self, delete: list[str], write: dict[str, bytes], protected: tuple[str, ...]) -> None:
        """Carry out a plan: remove directories and rewrite files, each re-confined first, then
        stage what changed."""
        self.apply_files(delete, write, protected)
        self.stage(delete, write)

    def apply_files(
        self, delete: list[str], write: dict[str, bytes], protected: tuple[str, ...]
    ) -> None:
        """The working-tree half of `apply`: nothing is staged.

        Each path is confined afresh, by file descriptor: checked as text (`confine_text`), then
        reached from the root never following a symlink nor entering `.git` by another name
        (`remove_tree`, `replace_file`): a path swapped since the plan is refused, not followed.
        """
        git_dir = git_dir_stat(self.root)
        for rel in delete:
            remove_tree(self.root, confine_text(rel, protected), git_dir=git_dir)
        for rel, content in write.items():
            replace_file(self.root, confine_text(rel, protected), content, git_dir=git_dir)

    def stage(self, delete: list[str], write: Iterable[str]) -> None:
        """Stage deleted directories and written files (of one plan or of a whole batch) in at
        most two git processes. A written file deleted again later in a batch is not added."""
        # Literal pathspecs: a directory called `*` or `:(top)` must mean only itself. A deleted
        # directory may have held only untracked or ignored files, so `rm --ignore-unmatch`.
        if delete:
            self._git(
                "--literal-pathspecs",
                "rm",
                "-r",
                "-q",
                "--cached",
                "--ignore-unmatch",
                "--",
                *delete,
                doing="rm",
            )
        present = [rel for rel in write if os.path.lexists(self.root / rel)]
        if present:
            self._git("--literal-pathspecs", "add", "--", *present, doing="add")

    def staged_paths(self) -> set[str]:
        """Every path whose staged content differs from HEAD."""
        out = self._git("diff", "--cached", "--name-only", "--no-renames", "-z")
        return {p for p in out.split("\0") if p}

    def has_staged_changes(self) -> bool:
        return bool(self.repo.git.diff("--cached", "--name-only"))

    def commit(self, message: str, *injury_ids: str) -> str:
        """One commit of what is staged, with the auto-healer trailers (an `Injury-Id:` for each
        injury it heals); returns its sha."""
        clean = (re.sub(r"[\x00-\x1f\x7f]", "?", i) for i in injury_ids)
        trailers = "".join(f"Injury-Id: {i}\n" for i in clean)
        full = f"{message.strip()}\n\n{trailers}Healed-By: auto-healer\n"
        self._git(
            "-c",
            f"user.name={self.identity.name}",
            "-c",
            f"user.email={self.identity.email}",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--no-verify",
            "-m",
            full,
            doing="commit",
        )
        return self.head()

    def push(self, target_branch: str) -> bool:
        """Push HEAD to `target_branch` on the remote, never with force; False when not needed.

        A heal branch that already holds this very heal (same tree) is left as it is: a second
        run would otherwise be a non-fast-forward, retried and failed, for a heal already made.
        """
        if target_branch != self.branch and self._remote_tree(target_branch) == self._tree("HEAD"):
            return False
        self._git(
            "push",
            "--porcelain",
            "-q",
            self.remote,
            f"HEAD:refs/heads/{target_branch}",
            doing="push",
        )
        return True

    def restore(self, base: str) -> None:
        """Leave the checkout clean at `base` after a failed or cut-off heal (a user's untracked
        files are theirs: only our own clone is cleaned of them)."""
        bump_generation(self.root)
        self._git("reset", "-q", "--hard", base)
        if self.owned:
            self._git("clean", "-q", "-fd")

    def has_local_changes(self) -> bool:
        """Uncommitted changes to tracked files (untracked files do not count)."""
        return bool(self._git("status", "--porcelain", "--untracked-files=no"))  # one process

    # --- plumbing ---------------------------------------------------------------------------

    def _tree(self, rev: str) -> str:
        return self._git("rev-parse", f"{rev}^{{tree}}")

    def _remote_tree(self, branch: str) -> str | None:
        """The tree at the tip of a remote branch, or None when the branch does not exist."""
        if not self._git(
            "ls-remote", "--heads", self.remote, f"refs/heads/{branch}", doing="ls-remote"
        ):
            return None
        tracking = f"refs/remotes/{self.remote}/{branch}"
        self._git("fetch", "-q", self.remote, f"+refs/heads/{branch}:{tracking}", doing="fetch")
        return self._tree(tracking)

    def fetch(self) -> None:
        """Fetch the remote's branch into its tracking ref."""
        self._git(
            "fetch",
            "-q",
            "--prune",
            self.remote,
            f"+refs/heads/{self.branch}:refs/remotes/{self.remote}/{self.branch}",
            doing="fetch",
        )

    def git(self, *args: str, doing: str | None = None) -> str:
        """Run git here (hooks off); a failure raises `TransientError` or `HealFailed`."""
        return self._git(*args, doing=doing)

    def _git(self, *args: str, doing: str | None = None) -> str:
        # `doing` names the operation in errors; the network ones get the timeout.
        timeout = self.network_timeout_s if doing in ("fetch", "push", "ls-remote") else None
        try:
            # The repository's own hooks never run: a heal must not execute code from the repo.
            return str(
                self.repo.git.execute(
                    ["git", "-c", "core.hooksPath=/dev/null", *args], kill_after_timeout=timeout
                )
            )
        except git.GitCommandError as exc:
            raise git_error(exc, doing or args[0]) from None


def open_checkout(settings: GitSettings) -> Checkout:
    """The checkout the settings name: a URL to clone, or an existing path (default: here)."""
    identity = Identity(settings.author_name, settings.author_email)
    if settings.repo_url:
        co = Checkout.clone(
            settings.repo_url, settings.work_dir, branch=settings.branch, identity=identity
        )
    else:
        path, remote = settings.repo_path or Path.cwd(), settings.remote
        co = Checkout.open(path, branch=settings.branch, identity=identity, remote=remote)
    co.push_race_budget_s = settings.push_race_budget_s
    return co
