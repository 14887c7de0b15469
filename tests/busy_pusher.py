"""A teammate who pushes all day: commits to its own clone and pushes every INTERVAL seconds.

Run as its own process: `python tests/busy_pusher.py REMOTE CLONE OUT INTERVAL_S`. Each commit
adds one file under `busy/`; a rejected push is pulled with `--rebase` and pushed again (never
forced). The sha of every commit that landed is appended to OUT, one a line, as it lands.
It stops at SIGTERM, after the push under way.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

WHO = ["-c", "user.name=teammate", "-c", "user.email=teammate@aura.hive"]


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *WHO, *args], cwd=cwd, capture_output=True, text=True)


def main(remote: str, clone: Path, out: Path, interval_s: float) -> int:
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    subprocess.run(["git", "clone", "-q", remote, str(clone)], check=True)
    (clone / "busy").mkdir(exist_ok=True)
    n = 0
    with out.open("a") as landed:
        while not stop:
            n += 1
            (clone / "busy" / f"{n}.txt").write_text(f"teammate commit {n}\n")
            git(clone, "add", "-A").check_returncode()
            git(clone, "commit", "-qm", f"teammate commit {n}").check_returncode()
            while git(clone, "push", "-q", "origin", "HEAD:main").returncode != 0:
                git(clone, "pull", "-q", "--rebase", "origin", "main").check_returncode()
            sha = git(clone, "rev-parse", "HEAD").stdout.strip()
            landed.write(sha + "\n")
            landed.flush()
            time.sleep(interval_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])))
