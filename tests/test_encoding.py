"""EVENT_ENCODING: outcome events and heartbeats as the real Hive's `aura.core.v1.Event` protobuf
(read back with the generated class), fitted to max_payload, and JSON by default (real
nats-server, real agent processes, `auto-healer tail` as a subprocess)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.bloodstream import Publisher, connect
from auto_healer.contracts import SUBJECT_HEARTBEAT, event_subject, parse_injury
from auto_healer.embedded import NatsServer
from auto_healer.encoding import PROTO_TYPE, decode, to_event
from auto_healer.fit import budget, wire_size
from auto_healer.heartbeat import Heart
from auto_healer.metrics import Metrics
from auto_healer.proto.aura.core.v1 import event_pb2 as pb
from auto_healer.settings import load_settings
from google.protobuf import descriptor_pb2

from tests.agent_support import AgentProcess, seed_dirs, wait_until
from tests.conftest import ROOT, SMALL_MAX_PAYLOAD, injury
from tests.test_fit import failed_event

pytestmark = pytest.mark.timeout(120)
SMALL = SMALL_MAX_PAYLOAD  # the small_server fixture's limit
GENERATED = ROOT / "agents" / "auto_healer" / "proto" / "aura" / "core" / "v1"


class Inbox:
    """Every message on some subjects, kept raw (body and headers) on a real connection."""

    def __init__(self) -> None:
        self.msgs: list[Any] = []
        self.nc: Any = None

    async def start(self, url: str, *subjects: str) -> Inbox:
        self.nc = await nats.connect(url)

        async def on(msg: Any) -> None:
            self.msgs.append(msg)

        for subject in subjects:
            await self.nc.subscribe(subject, cb=on)
        await self.nc.flush()
        await self.nc.flush()
        return self

    def on(self, subject: str) -> list[Any]:
        return [m for m in self.msgs if m.subject == subject]

    async def wait(self, subject: str, count: int = 1, timeout_s: float = 30.0) -> list[Any]:
        await wait_until(
            lambda: len(self.on(subject)) >= count,
            timeout_s,
            f"{count} messages on {subject}",
            seen=lambda: sorted({m.subject for m in self.msgs}),
        )
        return self.on(subject)

    async def close(self) -> None:
        await self.nc.drain()


def test_the_checked_in_module_matches_a_fresh_protoc_run(tmp_path: Path) -> None:
    """`make proto` today gives the checked-in event_pb2.py and .pyi byte for byte."""
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "proto"),
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", "aura/core/v1/event.proto"],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    for name in ("event_pb2.py", "event_pb2.pyi"):
        fresh = (tmp_path / "aura" / "core" / "v1" / name).read_bytes()
        assert (GENERATED / name).read_bytes() == fresh, f"{name} is stale: run `make proto`"


def test_field_numbers_are_the_hives() -> None:
    """Event's fields, oneof, reserved numbers and enum values are numbered as in real-hive.md."""
    event = pb.Event.DESCRIPTOR
    numbers = {f.name: f.number for f in event.fields}
    assert numbers == {
        "identifier": 1, "topic": 2, "timestamp": 3, "metadata": 4, "trace": 5,
        "negotiation": 10, "vitals": 11, "alert": 12, "heartbeat": 13, "audit": 14, "log": 15,
    }  # fmt: skip
    assert [f.name for f in event.oneofs_by_name["payload"].fields] == [
        "negotiation", "vitals", "alert", "heartbeat", "audit", "log"
    ]  # fmt: skip
    assert event.fields_by_name["metadata"].message_type.full_name == "google.protobuf.Struct"
    assert event.fields_by_name["timestamp"].message_type.full_name == "google.protobuf.Timestamp"
    assert {f.name: f.number for f in pb.AlertEvent.DESCRIPTOR.fields} == {
        "severity": 1, "message": 2, "source": 3
    }  # fmt: skip
    assert {f.name: f.number for f in pb.LogEvent.DESCRIPTOR.fields} == {
        "level": 1, "message": 2, "logger_name": 3, "worker_name": 4
    }  # fmt: skip
    assert {f.name: f.number for f in pb.HeartbeatEvent.DESCRIPTOR.fields} == {
        "service": 1, "instance_id": 2, "status": 3
    }  # fmt: skip
    assert pb.SEVERITY_CRITICAL == 4 and pb.STATUS_DEGRADED == 2 and pb.ACTION_TYPE_ERROR == 8
    described = descriptor_pb2.DescriptorProto()
    event.CopyToProto(described)
    assert [(r.start, r.end) for r in described.reserved_range] == [(16, 17), (17, 18)]


@pytest.mark.parametrize(
    ("event_type", "severity", "kind", "level"),
    [
        ("injury_heal_failed", "critical", "alert", pb.SEVERITY_CRITICAL),
        ("injury_escalated", "high", "alert", pb.SEVERITY_ERROR),
        ("injury_rejected", "medium", "alert", pb.SEVERITY_WARNING),
        ("injury_escalated", "low", "alert", pb.SEVERITY_INFO),
        ("injury_rejected", None, "alert", pb.SEVERITY_WARNING),
        ("injury_healed", "high", "log", None),
        ("injury_skipped", "high", "log", None),
        ("injury_heal_planned", "low", "log", None),
    ],
)
def test_payload_kind_and_severity_follow_the_outcome(
    event_type: str, severity: str | None, kind: str, level: int | None
) -> None:
    """Failures, escalations and rejections are alerts graded by the injury; the rest are logs."""
    raw = injury("core/src/x/", **({"severity": severity} if severity else {}))
    if severity is None:
        del raw["severity"]
    doc = {
        "success": kind == "log",
        "event_type": event_type,
        "timestamp": 1735920000.25,
        "metadata": {"injury_id": "id-1", "reason": "why\nnot", "injury": raw, "attempts": 2},
    }
    event = to_event(event_subject(event_type), doc)
    assert event.WhichOneof("payload") == kind
    assert event.identifier == "id-1" and event.topic == f"aura.hive.events.{event_type}"
    assert event.timestamp.ToNanoseconds() == 1735920000_250000000
    assert event.metadata["attempts"] == 2.0 and event.metadata["event_type"] == event_type
    if kind == "alert":
        assert event.alert.severity == level and event.alert.source == "auto-healer"
        assert event.alert.message.endswith(": why not")
    else:
        assert (event.log.level, event.log.logger_name) == ("info", "auto_healer")
        assert "\n" not in event.log.message and "why not" in event.log.message


async def test_agent_publishes_events_and_heartbeats_as_aura_core_v1_events(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """With EVENT_ENCODING=aura-proto an agent's heal, escalation and heartbeats parse as Events."""
    remote, work = repo
    seed_dirs(work, ["stray"])
    healed_raw = json.dumps(injury("core/src/stray/")).encode()
    escalated_raw = json.dumps(injury("core/src/x/", auto_heal=False, severity="critical")).encode()
    env = {"EVENT_ENCODING": "aura-proto", "HEARTBEAT_INTERVAL_SEC": "1"}
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, env=env)
    inbox = await Inbox().start(nats_server.url, "aura.hive.events.>", SUBJECT_HEARTBEAT)
    try:
        agent.wait_ready()
        await inbox.nc.publish("aura.hive.injury", healed_raw)
        await inbox.nc.publish("aura.hive.injury", escalated_raw)
        [healed] = await inbox.wait("aura.hive.events.injury_healed")
        [escalated] = await inbox.wait("aura.hive.events.injury_escalated")
        beat = (await inbox.wait(SUBJECT_HEARTBEAT))[0]
        for msg in (healed, escalated, beat):
            assert msg.headers["Content-Type"] == PROTO_TYPE
            assert msg.data[:1] == b"\x0a"  # protobuf's field 1 (identifier), not JSON's `{`

        event = pb.Event.FromString(healed.data)
        assert event.topic == healed.subject
        assert event.identifier == parse_injury(healed_raw).id
        assert event.WhichOneof("payload") == "log" and event.log.level == "info"
        assert event.metadata["success"] is True and event.metadata["outcome"] == "healed"
        assert event.metadata["injury"]["affected_path"] == "core/src/stray/"
        assert event.metadata["commit"] and event.timestamp.seconds > 1_700_000_000

        event = pb.Event.FromString(escalated.data)
        assert event.topic == escalated.subject
        assert event.identifier == parse_injury(escalated_raw).id
        assert event.WhichOneof("payload") == "alert"
        assert event.alert.severity == pb.SEVERITY_CRITICAL
        assert event.alert.source == "auto-healer" and "core/src/x/" in event.alert.message
        assert event.metadata["success"] is False
        assert event.metadata["event_type"] == "injury_escalated"

        event = pb.Event.FromString(beat.data)
        assert event.topic == SUBJECT_HEARTBEAT and event.WhichOneof("payload") == "heartbeat"
        assert event.heartbeat.service == "auto-healer"
        assert event.heartbeat.instance_id.endswith(f"-{agent.proc.pid}")
        assert event.heartbeat.status == pb.STATUS_OK
        assert event.metadata["status"] == "active" and event.metadata["memory_mb"] > 0
        assert event.metadata["source"] == "nats-core"

        beats = len(inbox.on(SUBJECT_HEARTBEAT))
        assert agent.terminate() == 0, agent.logs()
        last = (await inbox.wait(SUBJECT_HEARTBEAT, beats + 1))[-1]
        assert pb.Event.FromString(last.data).heartbeat.status == pb.STATUS_DEGRADED
    finally:
        await inbox.close()
        agent.kill()


async def test_a_huge_event_still_fits_as_a_protobuf(small_server: NatsServer) -> None:
    """A 200 KB injury, and metadata the protobuf makes 5x larger than its JSON, both fit 4 KiB."""
    nc = await connect(load_settings().nats, small_server.url, name="encoding-test")
    publisher = Publisher(nc, Metrics(), encoding="aura-proto")
    subject = event_subject("injury_heal_failed")
    sub = await nc.subscribe(subject)
    try:
        raw = json.dumps(injury("build/tmp", severity="low", notes="n" * 200_000)).encode()
        doc = failed_event(raw, "the formatter failed") | {"event_type": "injury_heal_failed"}
        assert await publisher.publish_event(subject, doc)
        msg = await sub.next_msg(timeout=5)
        assert wire_size(msg.data, msg.headers) <= budget(SMALL)
        event = pb.Event.FromString(msg.data)
        assert event.identifier == parse_injury(raw).id
        assert event.alert.severity == pb.SEVERITY_INFO  # from the injury, though it was cut
        assert event.metadata["injury"]["truncated"] is True
        assert event.metadata["injury"]["original_size"] > 200_000

        # ~3 KB of JSON fits the budget; as Struct values (11 bytes a zero) it does not
        numbers = failed_event(json.dumps(injury("p")).encode(), "bad")
        numbers["event_type"] = "injury_heal_failed"
        numbers["metadata"]["samples"] = [0] * 1400
        assert len(json.dumps(numbers, separators=(",", ":"))) < budget(SMALL) - 100
        assert await publisher.publish_event(subject, numbers)
        msg = await sub.next_msg(timeout=5)
        assert wire_size(msg.data, msg.headers) <= budget(SMALL)
        samples = list(pb.Event.FromString(msg.data).metadata["samples"])
        assert 0 < len(samples) < 1400 and "truncated, 1400 items" in samples[-1]
        assert nc.is_connected
    finally:
        await nc.close()


async def test_default_json_is_unchanged_but_labelled(nats_server: NatsServer) -> None:
    """Without EVENT_ENCODING, events and heartbeats are the same compact JSON as before, with
    `Content-Type: application/json`."""
    nc = await connect(load_settings().nats, nats_server.url, name="encoding-test")
    inbox = await Inbox().start(nats_server.url, "aura.hive.events.>", SUBJECT_HEARTBEAT)
    try:
        doc = failed_event(json.dumps(injury("core/src/x/")).encode(), "no")
        assert await Publisher(nc, Metrics()).publish_event(event_subject("heal_failed"), doc)
        await Heart(nc, Metrics(), 60.0, lambda: {"in_flight": 0}).beat("active")
        [event] = await inbox.wait(event_subject("heal_failed"))
        [beat] = await inbox.wait(SUBJECT_HEARTBEAT)
        assert event.data == json.dumps(doc, separators=(",", ":")).encode()
        assert dict(event.headers) == {"Content-Type": "application/json"}
        got = json.loads(beat.data)
        assert list(got) == ["status", "timestamp", "service", "metadata"]
        assert got["service"] == "auto-healer" and got["metadata"]["in_flight"] == 0
        assert beat.headers["Content-Type"] == "application/json"
    finally:
        await inbox.close()
        await nc.close()


async def test_tail_prints_both_encodings(nats_server: NatsServer) -> None:
    """`auto-healer tail` shows JSON, a labelled Event and a bare (betterproto-style) Event
    readably, each header as a `Key: value` line."""
    tail = subprocess.Popen(
        [sys.executable, "-m", "auto_healer", "tail", "aura.hive.events.>",
         "--nats-url", nats_server.url, "--count", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    nc = await connect(load_settings().nats, nats_server.url, name="encoding-test")
    try:
        assert tail.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(tail.stderr.readline), 20)
        assert line.startswith("# listening"), line
        raw = json.dumps(injury("core/src/x/", severity="critical")).encode()
        doc = failed_event(raw, "no") | {"event_type": "injury_escalated"}
        subject = event_subject("injury_escalated")
        assert await Publisher(nc, Metrics()).publish_event(subject, doc)
        assert await Publisher(nc, Metrics(), encoding="aura-proto").publish_event(subject, doc)
        await nc.publish(subject, to_event(subject, doc).SerializeToString())
        await nc.flush()
        out, err = await asyncio.to_thread(tail.communicate, timeout=20)
        assert tail.returncode == 0, err
        blocks = out.split(f"] {subject}")[1:]
        assert len(blocks) == 3, out
        assert blocks[0].startswith("\nContent-Type: application/json\n{")
        assert '"event_type": "injury_escalated"' in blocks[0]
        assert blocks[1].startswith(f"\nContent-Type: {PROTO_TYPE}\n{{")
        for block in blocks[1:]:
            assert '"severity": "SEVERITY_CRITICAL"' in block and '"topic": "' + subject in block
        assert blocks[2].startswith("\n{")  # no headers: read as an Event by trying
        assert decode(to_event(subject, doc).SerializeToString())["alert"]["source"] == (
            "auto-healer"
        )
    finally:
        tail.kill()
        tail.wait()
        await nc.close()
