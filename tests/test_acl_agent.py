"""The real agent lives within the shipped ACLs: it heals in JetStream mode as user auto-healer,
on injuries bee-keeper publishes, and signed-injury enforcement rejects the unsigned and replays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from auto_healer.embedded import NatsServer, free_port
from auto_healer.signing import signed_headers

from tests.agent_support import AgentProcess, Events
from tests.conftest import ROOT, injury

CONF = ROOT / "deploy" / "nats" / "nats-server.conf"
USERS = ("bee-keeper", "core", "auto-healer", "observer", "operator")
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


def _conf_without_create_grants(tmp_path: Path) -> Path:
    """The shipped ACL file with an admin user added and auto-healer's CREATE grants removed,
    as the file's caveat says to do once `setup-nats` made the assets."""
    lines = CONF.read_text().splitlines()
    kept = [ln for ln in lines if not ('"$JS.API.' in ln and "CREATE" in ln)]
    assert len(kept) < len(lines) - 5  # the streams', the consumer's and the buckets' grants
    text = "\n".join(kept).replace(
        "users: [", 'users: [\n      { user: "admin", password: "dev-admin-password" }', 1
    )
    conf = tmp_path / "no-create.conf"
    conf.write_text(text)
    return conf


@pytest.mark.slow
async def test_setup_nats_as_admin_lets_the_agent_run_without_create_grants(
    tmp_path: Path,
    repo: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Assets made by `setup-nats` as an admin: the agent, with no CREATE grant, still heals."""
    from tests.pager_receiver import Receiver

    for user in USERS:
        monkeypatch.setenv(f"{user.upper().replace('-', '_')}_NATS_PASSWORD", password(user))
    conf = _conf_without_create_grants(tmp_path)
    remote, _work = repo
    receiver = Receiver().start()
    with NatsServer(tmp_path / "nats", config=conf, extra_args=("-m", str(free_port()))) as s:
        admin = {**os.environ, "NATS_USER": "admin", "NATS_PASSWORD": "dev-admin-password"}
        setup = subprocess.run(
            [sys.executable, "-m", "auto_healer", "setup-nats", "--nats-url", s.url],
            env=admin,
            capture_output=True,
            text=True,
            check=False,
        )
        assert setup.returncode == 0, setup.stderr
        assert "KV_auto-healer-pages" in setup.stdout
        agent = AgentProcess(
            tmp_path,
            "a",
            s.url,
            remote,
            jetstream=True,
            env={
                "NATS_USER": "auto-healer",
                "NATS_PASSWORD": password("auto-healer"),
                "PAGER_WEBHOOK_URL": receiver.url,
                "PAGER_FORMAT": "generic",
            },
        )
        events = await Events().start(_url(s, "observer"))
        try:
            agent.wait_ready()
            bee = await nats.connect(_url(s, "bee-keeper"))
            payload = json.dumps(injury("core/src/random_stuff/")).encode()
            await bee.publish("aura.hive.injury", payload)
            await bee.drain()
            await events.wait_for(1, timeout_s=30)
            assert [e["event_type"] for e in events.items] == ["injury_healed"]
            assert agent.terminate() == 0
            logs = agent.logs()
            assert "Permissions Violation" not in logs
            assert "shared_pages_unavailable" not in logs
        finally:
            await events.close()
            agent.kill()
            receiver.stop()
