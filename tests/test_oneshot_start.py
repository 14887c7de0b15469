"""The one-shot heal starts fast: it imports no transport it does not use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PLAYBOOKS, injury, remote_files, write_injuries

# A fresh interpreter runs the heal and then tells which of these it had imported.
PROBE = """
import json, sys
from auto_healer.cli import main
code = main(sys.argv[1:])
heavy = {"nats", "httpx", "prometheus_client", "rich", "pygments"}
loaded = sorted({m.split(".")[0] for m in sys.modules} & heavy)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def test_heal_imports_no_nats_httpx_or_prometheus(repo: tuple[Path, Path], tmp_path: Path) -> None:
    """`auto-healer heal` of a file without a pager, to a pipe, heals and never imports nats,
    httpx, prometheus_client, nor rich and pygments (structlog's own import pulled them in)."""
    remote, work = repo
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    env = {k: v for k, v in os.environ.items() if k not in ("PAGER_WEBHOOK_URL", "NATS_URL")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    argv = ["heal", str(injuries), "--repo", str(work), "--playbooks", str(PLAYBOOKS)]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    probe = json.loads(proc.stderr.strip().splitlines()[-1])
    assert probe["code"] == 0, proc.stderr[-2000:]
    assert not [f for f in remote_files(remote) if f.startswith("core/src/random_stuff/")]
    assert probe["loaded"] == []


def test_heal_runs_few_git_processes(repo: tuple[Path, Path], tmp_path: Path) -> None:
    """One heal runs at most 9 git commands of its own (it ran 18: two `is_dirty` of two
    processes each, `rev-parse` beside `rev-list`, `reset --hard` after `checkout -B`, and a
    fetch + `rev-parse` to verify a push the remote head already shows; then 11: a clean
    checkout already at the remote head needs neither `rev-list` nor `checkout -B`). GitPython
    runs `git version` twice at its import; those are counted apart."""
    remote, work = repo
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    events = tmp_path / "trace2.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PAGER_WEBHOOK_URL", "NATS_URL")}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "GIT_TRACE2_EVENT": str(events)}
    argv = ["heal", str(injuries), "--repo", str(work), "--playbooks", str(PLAYBOOKS)]
    proc = subprocess.run(
        [sys.executable, "-m", "auto_healer", *argv, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [o["outcome"] for o in report["outcomes"]] == ["healed"]
    assert report["outcomes"][0]["verified"] is True
    assert not [f for f in remote_files(remote) if f.startswith("core/src/random_stuff/")]
    starts = [json.loads(line) for line in events.read_text().splitlines()]
    # A process git starts itself (upload-pack, gc --auto) has its parent's sid before a "/".
    ours = [e["argv"][1:] for e in starts if e["event"] == "start" and "/" not in e["sid"]]
    heal = [a for a in ours if a != ["version"]]
    assert len(ours) - len(heal) <= 2, ours
    assert len(heal) <= 9, heal
    assert not [a for a in heal if "checkout" in a or "rev-list" in a], heal
