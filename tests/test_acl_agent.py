"""The real agent lives within the shipped ACLs: it heals in JetStream mode as user auto-healer,
on injuries bee-keeper publishes, and signed-injury enforcement rejects the unsigned and replays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from auto_healer.embedded import NatsServer, free_port
from auto_healer.signing import signed_headers

from tests.agent_support import AgentProcess, Events
from tests.conftest import ROOT, injury

CONF = ROOT / "deploy" / "nats" / "nats-server.conf"
USERS = ("bee-keeper", "core", "auto-healer", "observer")
KEY = "hive-signing-key"


def password(user: str) -> str:
    return f"dev-{user}-password"


@pytest.fixture
def acl_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    """nats-server with deploy/nats/nats-server.conf on loopback."""
    for user in USERS:
        monkeypatch.setenv(f"{user.upper().replace('-', '_')}_NATS_PASSWORD", password(user))
    with NatsServer(tmp_path / "nats", config=CONF, extra_args=("-m", str(free_port()))) as s:
        yield s


def _url(server: NatsServer, user: str) -> str:
    return f"nats://{user}:{password(user)}@127.0.0.1:{server.port}"


async def test_agent_heals_within_its_acl_and_rejects_unsigned(
    tmp_path: Path, repo: tuple[Path, Path], acl_nats: NatsServer
) -> None:
    """Within its ACL the agent heals a signed injury, rejects an unsigned one and a replay."""
    remote, _work = repo
    agent = AgentProcess(
        tmp_path,
        "a",
        acl_nats.url,
        remote,
        jetstream=True,
        env={
            "NATS_USER": "auto-healer",
            "NATS_PASSWORD": password("auto-healer"),
            "INJURY_SIGNING_KEY": KEY,
        },
    )
    events = await Events().start(_url(acl_nats, "observer"))
    try:
        agent.wait_ready()
        bee = await nats.connect(_url(acl_nats, "bee-keeper"))
        signed = json.dumps(injury("core/src/random_stuff/")).encode()
        unsigned = json.dumps(injury("core/src/app.py", injury_type="unformatted_code")).encode()
        captured = signed_headers(signed, KEY.encode(), msg_id="i-1")
        await bee.publish("aura.hive.injury", signed, headers=captured)
        await bee.publish("aura.hive.injury", unsigned)
        # a replay of the captured injury under a fresh msg-id (JetStream would drop the old one)
        await bee.publish("aura.hive.injury", signed, headers={**captured, "Nats-Msg-Id": "i-2"})
        await bee.flush()
        await bee.drain()
        await events.wait_for(3, timeout_s=30)
        kinds = sorted(e["event_type"] for e in events.items)
        assert kinds == ["injury_healed", "injury_rejected", "injury_rejected"]
        reasons = sorted(e["metadata"]["reason"] for e in events.of_type("injury_rejected"))
        assert reasons[0].startswith("bad injury signature")
        assert reasons[1].startswith("unsigned")
        assert agent.terminate() == 0
        assert "Permissions Violation" not in agent.logs()
    finally:
        await events.close()
        agent.kill()
