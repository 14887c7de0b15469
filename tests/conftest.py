"""Shared fixtures: real git repositories with bare remotes, and real nats-server processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from auto_healer.cli import main
from auto_healer.demo import SEED, make_repo
from auto_healer.embedded import NatsServer

from tests.pager_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"


@pytest.fixture(autouse=True)
def _isolated_git(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests never read the developer's git config or write to their state dir."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("DRY_RUN", "NATS_URL", "PAGER_WEBHOOK_URL", "REPO_PATH", "REPO_URL"):
        monkeypatch.delenv(var, raising=False)


def git(cwd: Path, *args: str) -> str:
    """Run git and return its stdout."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def tree_digest(path: Path, *, skip_git: bool = False) -> str:
    """A digest of every entry (names, bytes, modes, link targets, empty dirs) under a path.

    `.git` is included unless `skip_git`.
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(path)):
        if skip_git and Path(dirpath).relative_to(path).parts[:1] == (".git",):
            continue
        for name in sorted(dirnames + filenames):
            full = Path(dirpath, name)
            rel = full.relative_to(path)
            if skip_git and rel.parts == (".git",):
                continue
            h.update(str(rel).encode() + b"\0")
            if full.is_symlink():
                h.update(b"link:" + os.readlink(full).encode())
            elif full.is_dir():
                h.update(b"dir")
            else:
                h.update(full.read_bytes())
                h.update(oct(full.stat().st_mode).encode())
    return h.hexdigest()


def injury(
    affected_path: str, injury_type: str = "unauthorized_directory", **extra: object
) -> dict[str, object]:
    """An injury payload as bee-keeper publishes it."""
    payload: dict[str, object] = {
        "timestamp": 1735920000.456,
        "injury_type": injury_type,
        "affected_path": affected_path,
        "severity": "high",
        "recommended_action": "delete_directory",
        "auto_heal": True,
    }
    if injury_type == "unformatted_code":
        payload["recommended_action"] = "format_code"
    payload.update(extra)
    return payload


def write_injuries(path: Path, *payloads: dict[str, object]) -> Path:
    """Write injuries as a JSON list and return the file."""
    path.write_text(json.dumps(list(payloads)))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A bare remote and a checkout of it holding the demo's seed files."""
    return make_repo(tmp_path, SEED)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free loopback port."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


def heal_cli(
    capsys: pytest.CaptureFixture[str], *args: str, playbooks: Path = PLAYBOOKS
) -> tuple[int, dict[str, Any] | None, str]:
    """Run `auto-healer heal ... --format json` in-process: exit code, parsed report, stderr."""
    code = main(["heal", *args, "--playbooks", str(playbooks), "--format", "json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def remote_files(remote: Path, branch: str = "main") -> list[str]:
    """Every file on a branch of the bare remote."""
    return git(remote, "ls-tree", "-r", "--name-only", branch).split()


def commit_count(remote: Path, branch: str = "main") -> int:
    return int(git(remote, "rev-list", "--count", branch))


def injury_trailers(remote: Path, branch: str = "main") -> list[str]:
    """Every `Injury-Id:` trailer on a branch, newest commit first (a batch has several)."""
    out = git(remote, "log", "--format=%(trailers:key=Injury-Id,valueonly,separator=%x00)", branch)
    return [i for line in out.splitlines() for i in line.split("\0") if i]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1 (a pager that answers as scripted)."""
    r = Receiver().start()
    yield r
    r.stop()


SMALL_MAX_PAYLOAD = 4096


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream whose max_payload is 4 KiB (cheap size limits)."""
    config = tmp_path / "small.conf"
    config.write_text(f"max_payload: {SMALL_MAX_PAYLOAD}\n")
    with NatsServer(tmp_path / "nats", config=config) as server:
        yield server
