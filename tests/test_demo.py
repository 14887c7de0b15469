"""The installed `auto-healer` console script: the demo, and a heal fed on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, git, injury, remote_files

SCRIPT = Path(sys.executable).parent / "auto-healer"


def run(*args: str, cwd: Path = ROOT, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LOG_FORMAT": "json"},
    )


def test_demo_heals_end_to_end(tmp_path: Path) -> None:
    """`auto-healer demo` plans, then heals through the remote on an embedded NATS."""
    done = run("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    plan, loop, history, tree = out.split("==> ")[1:5]
    assert "WOULD HEAL" in plan
    assert "ESCALATED" in plan
    assert "'..'" in plan
    assert "embedded NATS server at nats://127.0.0.1:" in loop
    assert loop.count("aura.hive.events.injury_healed") == 2
    assert "aura.hive.events.injury_escalated" in loop
    assert "aura.hive.events.injury_rejected" in loop
    assert history.count("Injury-Id: ") == 2  # one commit or two: heals that queue coalesce
    assert "Healed-By: auto-healer" in history
    assert "core/src/random_stuff" not in tree


def test_console_script_heals_from_stdin(repo: tuple[Path, Path]) -> None:
    """The real script reads `-`, heals, prints JSON when piped, and exits 1 on a refusal."""
    remote, work = repo
    lines = "\n".join(json.dumps(i) for i in (injury("core/src/random_stuff"), injury(".git")))
    done = run(
        "heal", "-", "--repo", str(work), "--playbooks", str(ROOT / "playbooks"), stdin=lines
    )
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert [o["outcome"] for o in doc["outcomes"]] == ["healed", "rejected"]
    assert all(json.loads(line) for line in done.stderr.splitlines())
    assert not any(f.startswith("core/src/random_stuff") for f in remote_files(remote))
    assert git(work, "status", "--porcelain") == ""
