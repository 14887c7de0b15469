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
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"nats", "httpx", "prometheus_client"})
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def test_heal_imports_no_nats_httpx_or_prometheus(repo: tuple[Path, Path], tmp_path: Path) -> None:
    """`auto-healer heal` of a file without a pager heals and never imports nats, httpx or
    prometheus_client."""
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
