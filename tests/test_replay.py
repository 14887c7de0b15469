"""`dead-letters` and `replay` from a shell, with signed injuries: a replay signs again only
what the publisher itself signed, on a real agent and nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.cli import main
from auto_healer.embedded import NatsServer
from auto_healer.signing import Verifier, signed_headers

from tests.agent_support import AgentProcess
from tests.conftest import injury

KEY = "replay-test-signing-key-0123456789"


def _dead_letters(capsys: pytest.CaptureFixture[str], url: str) -> list[dict[str, Any]]:
    assert main(["dead-letters", "--nats-url", url, "--format", "json"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def _wait_dead_letters(
    capsys: pytest.CaptureFixture[str], url: str, count: int, timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = _dead_letters(capsys, url)
        if len(rows) >= count:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"{count} dead letters expected within {timeout_s}s, got {rows}")


async def _publish(url: str, body: bytes, headers: dict[str, str]) -> None:
    nc = await nats.connect(url)
    try:
        await nc.publish("aura.hive.injury", body, headers=headers)
        await nc.flush()
    finally:
        await nc.close()


async def _next_injury(url: str, run: Any) -> Any:
    """Run `run()` (in a thread) while subscribed to `aura.hive.injury`; the message it sends."""
    nc = await nats.connect(url)
    try:
        sub = await nc.subscribe("aura.hive.injury")
        await nc.flush()
        await asyncio.to_thread(run)
        return await sub.next_msg(timeout=10)
    finally:
        await nc.close()


def test_replay_signs_again_only_what_its_publisher_signed(
    tmp_path: Path,
    nats_server: NatsServer,
    repo: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signed injury the contract refused is replayed signed anew under a new id that the
    agents' verifier accepts; an unsigned one is refused (exit 2) and stays a dead letter."""
    remote, _work = repo
    url = nats_server.url
    agent = AgentProcess(
        tmp_path, "a", url, remote, jetstream=True, env={"INJURY_SIGNING_KEY": KEY}
    ).wait_ready()
    try:
        signed_bad = json.dumps({**injury("core/src/x/"), "severity": "apocalyptic"}).encode()
        asyncio.run(
            _publish(url, signed_bad, signed_headers(signed_bad, KEY.encode(), msg_id="s-1"))
        )
        unsigned = json.dumps(injury("core/src/y/")).encode()
        asyncio.run(_publish(url, unsigned, {"Nats-Msg-Id": "u-1"}))
        rows = _wait_dead_letters(capsys, url, 2)
    finally:
        agent.terminate()
    by_id = {r["injury_id"]: r for r in rows}
    assert set(by_id) == {"s-1", "u-1"}, rows
    assert "unsigned" in by_id["u-1"]["reason"]

    monkeypatch.setenv("INJURY_SIGNING_KEY", KEY)
    seq = str(by_id["s-1"]["seq"])
    msg = asyncio.run(
        _next_injury(url, lambda: main(["replay", seq, "--nats-url", url, "--by", "carol"]))
    )
    assert "replayed as injury replay-" in capsys.readouterr().out
    assert msg.data == signed_bad
    assert msg.headers["Nats-Msg-Id"].startswith("replay-")
    Verifier(KEY.encode()).verify(msg.data, msg.headers)  # fresh, new id: accepted

    code = main(["replay", str(by_id["u-1"]["seq"]), "--nats-url", url])
    err = capsys.readouterr().err
    assert code == 2
    assert "no valid v2 signature" in err
    assert [r["injury_id"] for r in _dead_letters(capsys, url)] == ["u-1"]


def test_replay_of_a_dead_letter_that_is_not_there_is_a_clear_error(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaying a sequence with no dead letter exits 2 and says so; listing shows none."""
    assert main(["replay", "42", "--nats-url", nats_server.url]) == 2
    assert "no dead letter 42" in capsys.readouterr().err
    assert main(["dead-letters", "--nats-url", nats_server.url]) == 0
    assert "no dead letters" in capsys.readouterr().out
