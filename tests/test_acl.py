"""The NATS ACLs of deploy/nats (the server conf and the Helm values), on a real nats-server.

Every allow is shown by the message arriving (or the JetStream call succeeding); every deny by
the server's permissions violation reaching the client's `error_cb`, and for subscriptions also
by a message that a permitted subscriber receives while the denied one receives nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
import yaml
from auto_healer.embedded import NatsServer, free_port
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StreamConfig

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "nats" / "nats-server.conf"
HELM_VALUES = ROOT / "deploy" / "nats" / "helm-values.yaml"
USERS = ("bee-keeper", "core", "auto-healer", "observer", "operator")
INJURY = json.dumps({
    "timestamp": 1735920000.456, "injury_type": "unauthorized_directory", "severity": "high",
    "affected_path": "core/src/random_stuff/", "recommended_action": "delete_directory",
    "auto_heal": True,
}).encode()  # fmt: skip
QUIET_S = 0.3  # how long a denied subscription must stay silent


def password(user: str) -> str:
    """The dev password the test gives each user through the environment."""
    return f"dev-{user}-password"


def helm_values_conf(tmp_path: Path) -> Path:
    """The `config.merge` of deploy/nats/helm-values.yaml as a nats-server config file.

    The chart renders `<< $VAR >>` as a bare variable reference; JSON is valid NATS config.
    """
    merge = yaml.safe_load(HELM_VALUES.read_text())["config"]["merge"]
    text = re.sub(r'"<< (\$[A-Z_]+) >>"', r"\1", json.dumps(merge, indent=2))
    conf = tmp_path / "helm-merge.conf"
    conf.write_text(text)
    return conf


@pytest.fixture(params=["nats-server.conf", "helm-values.yaml"])
def acl_server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NatsServer]:
    """nats-server on loopback with the shipped ACLs (the conf, or the Helm chart's merge)."""
    for user in USERS:
        monkeypatch.setenv(f"{user.upper().replace('-', '_')}_NATS_PASSWORD", password(user))
    conf = CONF if request.param == "nats-server.conf" else helm_values_conf(tmp_path)
    server = NatsServer(tmp_path / "nats", config=conf, extra_args=("-m", str(free_port())))
    with server:
        yield server


class Conn:
    """A connected client and the async errors (permission violations) it has received."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    async def violation(self, needle: str, timeout: float = 2.0) -> str:
        """Wait for a permissions violation whose text contains `needle`."""
        await synced(self.nc)
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for err in self.errors:
                if "permissions violation" in err.lower() and needle.lower() in err.lower():
                    return err
            await asyncio.sleep(0.02)
        raise AssertionError(f"no violation for {needle!r}; errors: {self.errors}")

    async def denied_publish(self, subject: str) -> None:
        await self.nc.publish(subject, b"{}")
        await self.violation(f'Publish to "{subject}"')

    async def denied_subscribe(self, subject: str, queue: str = "") -> list[Msg]:
        """Subscribe where it is denied; return the list that must stay empty."""
        got: list[Msg] = []

        async def cb(msg: Msg) -> None:
            got.append(msg)

        await self.nc.subscribe(subject, queue=queue, cb=cb)
        await self.violation(f'Subscription to "{subject}"')
        return got


@asynccontextmanager
async def connect(server: NatsServer, user: str) -> AsyncIterator[Conn]:
    """A real nats-py connection as `user` that records its async errors."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(server.url, user=user, password=password(user), error_cb=on_error,
                            allow_reconnect=False, connect_timeout=2)  # fmt: skip
    try:
        yield Conn(nc, errors)
    finally:
        await nc.close()


async def synced(nc: Client) -> None:
    """Make sure the server has processed everything sent so far.

    nats-py 2.16's flush() writes its PING ahead of commands still buffered, so one flush can
    return before a SUB reached the server; the second PING is sent after that buffer.
    """
    await nc.flush()
    await nc.flush()


async def received(conn: Conn, subject: str, queue: str = "") -> Callable[[], list[Msg]]:
    """Subscribe (allowed) and return a getter of what arrived."""
    got: list[Msg] = []

    async def cb(msg: Msg) -> None:
        got.append(msg)

    await conn.nc.subscribe(subject, queue=queue, cb=cb)
    await synced(conn.nc)
    return lambda: got


async def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def assert_published(
    server: NatsServer, user: str, subjects: list[str], subscriber: str = "observer"
) -> None:
    """`user` publishes each subject without violation and `subscriber` receives each one."""
    async with connect(server, subscriber) as sub, connect(server, user) as pub:
        got = await received(sub, ">" if subscriber != "observer" else "aura.>")
        for subject in subjects:
            await pub.nc.publish(subject, b"{}")
        await pub.nc.flush()
        await eventually(lambda: {m.subject for m in got()} >= set(subjects))
        assert pub.errors == []


async def test_anonymous_and_wrong_password_are_refused(acl_server: NatsServer) -> None:
    """No user, or a wrong password, cannot connect at all."""
    for kwargs in ({}, {"user": "bee-keeper", "password": "wrong"}):
        with pytest.raises(Exception, match=r"(?i)authorization|no servers|closed"):
            await nats.connect(
                acl_server.url,
                allow_reconnect=False,
                connect_timeout=2,
                max_reconnect_attempts=0,
                **kwargs,
            )


async def test_bee_keeper_publishes_audits_and_injuries(acl_server: NatsServer) -> None:
    """bee-keeper may publish aura.hive.audit and aura.hive.injury."""
    await assert_published(acl_server, "bee-keeper", ["aura.hive.audit", "aura.hive.injury"])


async def test_bee_keeper_denials(acl_server: NatsServer) -> None:
    """bee-keeper cannot publish events/heartbeats/JetStream API nor subscribe to events."""
    async with connect(acl_server, "bee-keeper") as bee, connect(acl_server, "core") as core:
        for subject in (
            "aura.hive.events.x",
            "aura.hive.heartbeat",
            "aura.core.brain_dead",
            "$JS.API.STREAM.CREATE.AURA_INJURIES",
        ):
            await bee.denied_publish(subject)
        silent = await bee.denied_subscribe("aura.hive.events.>")
        await core.nc.publish("aura.hive.events.negotiation_accepted", b"{}")
        await core.nc.flush()
        await asyncio.sleep(QUIET_S)
        assert silent == []


async def test_core_publishes_events_heartbeats_brain_dead(acl_server: NatsServer) -> None:
    """core may publish aura.hive.events.<type>, aura.hive.heartbeat and aura.core.brain_dead."""
    subjects = [
        "aura.hive.events.negotiation_accepted",
        "aura.hive.heartbeat",
        "aura.core.brain_dead",
    ]
    await assert_published(acl_server, "core", subjects)


async def test_core_denials(acl_server: NatsServer) -> None:
    """core cannot publish injuries, audits or multi-token events, nor read injuries."""
    async with connect(acl_server, "core") as core, connect(acl_server, "bee-keeper") as bee:
        for subject in ("aura.hive.injury", "aura.hive.audit", "aura.hive.events.a.b"):
            await core.denied_publish(subject)
        silent = await core.denied_subscribe("aura.hive.injury")
        await bee.nc.publish("aura.hive.injury", INJURY)
        await bee.nc.flush()
        await asyncio.sleep(QUIET_S)
        assert silent == []


async def test_auto_healer_receives_injuries_in_its_queue_group(acl_server: NatsServer) -> None:
    """auto-healer receives injuries as a member of queue group `auto-healer`."""
    async with connect(acl_server, "auto-healer") as ah, connect(acl_server, "bee-keeper") as bee:
        got = await received(ah, "aura.hive.injury", queue="auto-healer")
        await bee.nc.publish("aura.hive.injury", INJURY)
        await bee.nc.flush()
        await eventually(lambda: len(got()) == 1)
        assert got()[0].data == INJURY
        assert ah.errors == []


async def test_auto_healer_publishes_outcomes_heartbeats_dead_letters(
    acl_server: NatsServer,
) -> None:
    """auto-healer may publish aura.hive.events.>, aura.hive.heartbeat and its dead letters."""
    subjects = [
        f"aura.hive.events.injury_{k}"
        for k in ("healed", "heal_failed", "escalated", "rejected", "skipped", "heal_planned")
    ]
    subjects += ["aura.hive.heartbeat", "aura.hive.dead_letter.injury"]
    await assert_published(acl_server, "auto-healer", subjects)


async def test_auto_healer_cannot_read_injuries_outside_its_queue_group(
    acl_server: NatsServer,
) -> None:
    """A plain or other-queue subscription of auto-healer to injuries is denied and silent."""
    async with connect(acl_server, "auto-healer") as ah, connect(acl_server, "bee-keeper") as bee:
        control = await received(ah, "aura.hive.injury", queue="auto-healer")
        plain = await ah.denied_subscribe("aura.hive.injury")
        other = await ah.denied_subscribe("aura.hive.injury", queue="intruders")
        wide = await ah.denied_subscribe("aura.hive.>")
        await bee.nc.publish("aura.hive.injury", INJURY)
        await bee.nc.flush()
        await eventually(lambda: len(control()) == 1)
        await asyncio.sleep(QUIET_S)
        assert (plain, other, wide) == ([], [], [])


async def test_auto_healer_denials(acl_server: NatsServer) -> None:
    """auto-healer cannot publish injuries/audits nor touch JetStream beyond its own resources."""
    async with connect(acl_server, "auto-healer") as ah:
        for subject in (
            "aura.hive.injury",
            "aura.hive.audit",
            "aura.core.brain_dead",
            "aura.hive.dead_letter.other",
            "$JS.API.STREAM.DELETE.AURA_INJURIES",
            "$JS.API.STREAM.PURGE.AURA_INJURIES",
            "$JS.API.STREAM.UPDATE.AURA_INJURIES",
            "$JS.API.STREAM.CREATE.OTHER",
            "$JS.API.CONSUMER.CREATE.AURA_INJURIES.intruder",
            "$JS.API.CONSUMER.DELETE.AURA_INJURIES.auto-healer",
            "$JS.API.STREAM.MSG.GET.AURA_INJURIES",
            "$JS.ACK.AURA_INJURIES.other.1.1.1.1.1",
            "$KV.other-bucket.key",
            "$JS.API.STREAM.CREATE.KV_other-bucket",
        ):
            await ah.denied_publish(subject)


async def test_auto_healer_jetstream_stream_consumer_fetch_ack(acl_server: NatsServer) -> None:
    """auto-healer creates its streams and durable pull consumer, fetches and acks injuries."""
    async with connect(acl_server, "auto-healer") as ah, connect(acl_server, "bee-keeper") as bee:
        js = ah.nc.jetstream()
        await js.add_stream(StreamConfig(name="AURA_INJURIES", subjects=["aura.hive.injury"]))
        await js.add_stream(StreamConfig(name="AURA_INJURIES", subjects=["aura.hive.injury"]))
        await js.add_stream(
            StreamConfig(name="AURA_DEAD_LETTERS", subjects=["aura.hive.dead_letter.>"])
        )
        assert (await js.stream_info("AURA_INJURIES")).config.subjects == ["aura.hive.injury"]
        sub = await js.pull_subscribe(
            "aura.hive.injury", durable="auto-healer", stream="AURA_INJURIES"
        )
        bee_js = bee.nc.jetstream()
        for n in range(4):  # bee-keeper publishes with JetStream acks and a dedup id
            ack = await bee_js.publish("aura.hive.injury", INJURY, headers={"Nats-Msg-Id": f"i{n}"})
            assert ack.stream == "AURA_INJURIES"
        msgs = await sub.fetch(4, timeout=2)
        assert [m.data for m in msgs] == [INJURY] * 4
        await msgs[0].ack()
        await msgs[1].ack_sync()
        await msgs[2].in_progress()
        await msgs[2].term()
        await msgs[3].nak(delay=60)
        ack = await js.publish("aura.hive.dead_letter.injury", INJURY)
        assert ack.stream == "AURA_DEAD_LETTERS"
        # acks are applied by the consumer asynchronously: wait (loudly) for them to land
        deadline = asyncio.get_running_loop().time() + 10
        while (info := await js.consumer_info("AURA_INJURIES", "auto-healer")).num_ack_pending > 1:
            assert asyncio.get_running_loop().time() < deadline, info
            await asyncio.sleep(0.05)
        assert info.num_ack_pending == 1  # only the nak'd one, redelivered after its delay
        await ah.nc.flush()
        assert ah.errors == []
        assert bee.errors == []


@pytest.mark.parametrize("direct", [False, True])
async def test_auto_healer_key_value_buckets(acl_server: NatsServer, direct: bool) -> None:
    """auto-healer creates and uses its KV buckets: put, get, create, update, delete."""
    async with connect(acl_server, "auto-healer") as ah:
        js = ah.nc.jetstream()
        buckets = ("locks", "healed", "throttle", "pages")
        for bucket in (f"auto-healer-{b}" for b in buckets):
            with pytest.raises(nats.js.errors.BucketNotFoundError):
                await js.key_value(bucket)
            await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=60, direct=direct))
            kv = await js.key_value(bucket)
            await kv.put("injury.sha256-1", b"healed")
            assert (await kv.get("injury.sha256-1")).value == b"healed"
            rev = await kv.create("lock", b"pod-a")
            with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
                await kv.create("lock", b"pod-b")
            await kv.update("lock", b"pod-a-renewed", last=rev)
            await kv.delete("lock")
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("lock")
        await ah.nc.flush()
        assert ah.errors == []


async def test_observer_reads_everything_and_publishes_nothing(acl_server: NatsServer) -> None:
    """observer (tail, metrics) receives injuries and events but cannot publish anything."""
    async with connect(acl_server, "observer") as obs, connect(acl_server, "bee-keeper") as bee:
        got = await received(obs, "aura.hive.>")
        await bee.nc.publish("aura.hive.injury", INJURY)
        await bee.nc.flush()
        await eventually(lambda: len(got()) == 1)
        for subject in (
            "aura.hive.injury",
            "aura.hive.events.injury_healed",
            "$JS.API.STREAM.CREATE.AURA_INJURIES",
        ):
            await obs.denied_publish(subject)


async def test_auto_healer_watches_the_controls_and_keeps_the_history(
    acl_server: NatsServer,
) -> None:
    """auto-healer mirrors the controls bucket through a watch, writes its breaker cells, and
    creates (then updates) the heal history stream, all within its grants."""
    from auto_healer import controls
    from auto_healer.history import ensure_history
    from auto_healer.kvcell import KvCell
    from auto_healer.settings import Settings

    async with connect(acl_server, "auto-healer") as ah:
        js = ah.nc.jetstream()
        cells = await KvCell.open(js, controls.BUCKET_CONTROLS)
        mirror = controls.Controls(cells)
        watching = asyncio.create_task(mirror.watch())
        try:
            await asyncio.wait_for(mirror.synced.wait(), 5)
            await controls.pause(cells, by="ops", reason="acl", playbook=None)
            await eventually(lambda: mirror.paused() is not None)
            assert await cells.swap("breaker.x", b"{}", None)
        finally:
            watching.cancel()
        settings = Settings().controls
        assert await ensure_history(js, settings, required=True)
        wider = settings.model_copy(update={"history_max_age_s": 3600.0})
        assert await ensure_history(js, wider, required=True)
        assert (await js.stream_info("AURA_HEAL_HISTORY")).config.max_age == 3600.0
        await ah.nc.flush()
        assert ah.errors == []


def test_operator_runs_every_control_command_and_nothing_else(
    acl_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """As user operator every control command works (pause, resume, reset-breaker, approve,
    reject, history, show, dead-letters, replay); other writes and reads are denied."""
    from auto_healer import approval_flow, controls
    from auto_healer.cli import main
    from auto_healer.contracts import parse_injury_obj
    from auto_healer.kvcell import KvCell
    from auto_healer.playbooks import load_playbooks

    from tests.conftest import PLAYBOOKS, injury

    def as_user(user: str, *args: str) -> str:
        code = main([*args, "--nats-url", acl_server.url, "--user", user,
                     "--password", password(user)])  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    as_user("auto-healer", "setup-nats")  # the assets, as the agent would make them
    asked = [parse_injury_obj(injury(f"core/src/d{i}/")) for i in range(2)]

    async def seed() -> None:
        async with connect(acl_server, "auto-healer") as ah:
            cells = await KvCell.open(ah.nc.jetstream(), controls.BUCKET_CONTROLS)
            playbook = load_playbooks(PLAYBOOKS).match(asked[0].injury)
            assert playbook is not None
            for parsed in asked:
                await approval_flow.ask(cells, parsed, playbook)
            headers = {"Auto-Healer-Injury-Id": "poison-1", "Auto-Healer-Reason": "acl"}
            await ah.nc.jetstream().publish("aura.hive.dead_letter.injury", INJURY, headers=headers)

    asyncio.run(seed())
    assert "paused by op: acl" in as_user("operator", "pause", "--reason", "acl", "--by", "op")
    assert "resumed" in as_user("operator", "resume", "--by", "op")
    assert "no breaker state" in as_user("operator", "reset-breaker", "some-repo")
    assert "approved by op" in as_user("operator", "approve", asked[0].id, "--by", "op")
    assert "rejected by op" in as_user("operator", "reject", asked[1].id, "--by", "op")
    assert "pause" in as_user("operator", "history", "--since", "1h")
    assert "approved" in as_user("operator", "show", asked[0].id)
    listed = as_user("operator", "dead-letters")
    assert "poison-1" in listed
    seq = listed.split()[0]
    assert f"dead letter {seq} replayed" in as_user("operator", "replay", seq)
    assert "no dead letters" in as_user("operator", "dead-letters")

    async def denials() -> None:
        async with connect(acl_server, "operator") as op:
            for subject in (
                "aura.hive.heartbeat",
                "aura.hive.events.injury_healed",
                "$KV.auto-healer-locks.x",
                "$JS.API.STREAM.CREATE.KV_auto-healer-controls",
                "$JS.API.STREAM.DELETE.AURA_HEAL_HISTORY",
                "$JS.API.STREAM.MSG.DELETE.AURA_HEAL_HISTORY",
                "$JS.API.CONSUMER.MSG.NEXT.AURA_INJURIES.auto-healer",
            ):
                await op.denied_publish(subject)
            await op.denied_subscribe("aura.hive.injury")

    asyncio.run(denials())
