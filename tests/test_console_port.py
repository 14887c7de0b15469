"""`auto-healer run --console` with no metrics port, as a newcomer types it: the console is
served on 8080 (or the next free port) and the log says where."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from auto_healer.embedded import NatsServer


def test_console_without_a_metrics_port_says_where_it_is(
    tmp_path: Path, nats_server: NatsServer, repo: tuple[Path, Path]
) -> None:
    """The `console_listening` line names a URL whose /ui answers with the outcomes page."""
    remote, _work = repo
    log = tmp_path / "agent.log"
    argv = [sys.executable, "-m", "auto_healer", "run", "--console"]
    argv += ["--nats-url", nats_server.url, "--repo-url", str(remote)]
    env = {**os.environ, "WORK_DIR": str(tmp_path / "work"), "LOG_FORMAT": "json"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline, url = time.monotonic() + 20, None
        while url is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no console_listening line:\n{log.read_text()}"
            for line in log.read_text().splitlines():
                if '"console_listening"' in line:
                    url = json.loads(line)["url"]
            time.sleep(0.1)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port >= 8080
        page = httpx.get(url, timeout=5, follow_redirects=True)
        assert page.status_code == 200
        assert "Outcomes" in page.text
    finally:
        proc.terminate()
        proc.wait(30)
