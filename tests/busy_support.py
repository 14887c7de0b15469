"""A busy remote for tests: another process pushing to it every 200 ms, and the checks that no
commit of it was lost and nothing was force-pushed."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import git

PUSHER = Path(__file__).with_name("busy_pusher.py")


class BusyRemote:
    """A teammate's process pushing a commit to `remote` every `interval_s`."""

    def __init__(self, tmp: Path, remote: Path, interval_s: float = 0.2) -> None:
        self.remote, self.landed = remote, tmp / "teammate-landed.txt"
        # a bare remote keeps no reflog unless told: it is what shows a force push
        git(remote, "config", "core.logAllRefUpdates", "always")
        argv = [sys.executable, str(PUSHER), str(remote), str(tmp / "teammate"), str(self.landed)]
        self.proc = subprocess.Popen([*argv, str(interval_s)], stderr=subprocess.PIPE)

    def wait_busy(self, commits: int = 2, timeout_s: float = 20.0) -> None:
        """Wait until the teammate has landed `commits` commits (fail loudly otherwise)."""
        deadline = time.monotonic() + timeout_s
        while len(self.commits()) < commits:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"the teammate landed {len(self.commits())} commits: {err}")
            time.sleep(0.05)

    def commits(self) -> list[str]:
        return self.landed.read_text().split() if self.landed.exists() else []

    def stop(self) -> list[str]:
        """Stop the teammate (after its push under way); every commit it landed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        assert self.proc.wait(20) == 0, self.proc.stderr.read() if self.proc.stderr else ""
        return self.commits()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def assert_nothing_lost(remote: Path, kept: list[str], branch: str = "main") -> None:
    """Every commit in `kept` is in the branch's history, and every update of the branch was a
    fast-forward (its reflog, oldest first, is a line of ancestors): no force push."""
    head = git(remote, "rev-parse", branch).strip()
    lost = [c for c in kept if not _is_ancestor(remote, c, head)]
    assert not lost, f"{len(lost)} of {len(kept)} commits lost from {branch}: {lost[:5]}"
    values = git(remote, "reflog", "show", "--format=%H", branch).split()[::-1]
    assert len(values) > 1, "the remote's reflog recorded no update"
    for old, new in itertools.pairwise(values):
        assert _is_ancestor(remote, old, new), f"{branch} went from {old} to {new}: not a ff"


def _is_ancestor(repo: Path, old: str, new: str) -> bool:
    args = ["git", "merge-base", "--is-ancestor", old, new]
    return subprocess.run(args, cwd=repo, capture_output=True).returncode == 0
