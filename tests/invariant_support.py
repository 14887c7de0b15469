"""A rig for property tests of the agent: one nats-server, one bare remote and one `auto-healer
run` process, plus a real subscriber that ties every published message to its outcome event and
dead letter. Each `deliver()` leaves the system quiescent, so examples cannot leak into each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
from auto_healer.demo import SEED, make_repo
from auto_healer.embedded import NatsServer
from auto_healer.signing import signed_headers

from tests.agent_support import AgentProcess, remote_tree
from tests.conftest import git, injury

T = TypeVar("T")
SUBJECT = "aura.hive.injury"
EVENTS = "aura.hive.events"
DEAD = "aura.hive.dead_letter.injury"
CANARIES = 150
REJECTED = "injury_rejected"
HEALED = "injury_healed"
# Log events that mean the agent lost its connection, a message or its footing.
BAD_LOG_EVENTS = {
    "nats_disconnected",
    "nats_error",
    "nats_publish_failed",
    "fetch_failed",
    "process_internal_error",
    "heal_internal_error",
    "injury_cut_off",
}


@dataclass(frozen=True)
class Sent:
    """One message to publish and what may follow from it."""

    label: str
    body: bytes
    headers: dict[str, str] | None
    expect: frozenset[str]  # the outcome event types allowed
    msg_id: str | None = None  # the injury id the event must carry, when it carries one
    target: str | None = None  # a real directory this message removes if (and only if) healed


def expected_id(msg_id: str) -> str:
    """The injury id a `Nats-Msg-Id` gives, as the README says: itself when short (200) and
    printable, else `msgid-sha256-` and 24 hex digits of its sha256 (never logged raw)."""
    if len(msg_id) <= 200 and msg_id.isprintable():
        return msg_id
    digest = hashlib.sha256(msg_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"msgid-sha256-{digest}"


def signature(body: bytes, key: bytes, msg_id: str, signed_at: str) -> str:
    """`Aura-Signature` v2 as the README documents it, computed here with hmac + hashlib."""
    text = b"\n".join([b"aura-injury-v2", msg_id.encode(), signed_at.encode(), body])
    return "v2=" + hmac.new(key, text, hashlib.sha256).hexdigest()


def header_bytes(headers: dict[str, str] | None) -> int:
    """The size of the header block nats-py sends (it counts toward the server's max_payload)."""
    if not headers:
        return 0
    size = len(b"NATS/1.0\r\n\r\n")
    for k, v in headers.items():
        size += len(k.strip().encode()) + 4 + len(v.strip().encode())
    return size


class Rig:
    """One module's agent and everything around it; `deliver()` checks every invariant."""

    def __init__(self, tmp: Path, *, jetstream: bool, signing_key: bytes | None) -> None:
        self.tmp, self.jetstream, self.key = tmp, jetstream, signing_key
        self.server = NatsServer(tmp / "nats").start()
        self.remote, self.work = make_repo(tmp, SEED)
        for i in range(CANARIES):
            d = self.work / "canaries" / f"c{i:03d}"
            d.mkdir(parents=True)
            (d / "keep.txt").write_text(f"canary {i}\n")
        git(self.work, "add", "-A")
        git(self.work, "-c", "user.name=bee", "-c", "user.email=b@h", "commit", "-qm", "canaries")
        git(self.work, "push", "-q", "origin", "main")
        self._next_dir = 0
        env = {"INJURY_SIGNING_KEY": signing_key.decode()} if signing_key else {}
        self.agent = AgentProcess(
            tmp, "agent", self.server.url, self.remote, jetstream=jetstream, env=env
        )
        self.agent.wait_ready()
        self._log_offset = 0
        self.broken: str | None = None
        self.published = 0  # messages the stream (or core subscribers) really received
        self.events: list[tuple[str, bytes]] = []
        self.dead: list[tuple[bytes, dict[str, str]]] = []
        self._seen = (0, 0)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.nc: Any = self.run(self._connect())
        self.max_payload = int(self.nc.max_payload)

    # --- plumbing ---------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _connect(self) -> Any:
        nc = await nats.connect(self.server.url)

        async def on_event(msg: Any) -> None:
            self.events.append((msg.subject, msg.data))

        async def on_dead(msg: Any) -> None:
            self.dead.append((msg.data, dict(msg.headers or {})))

        await nc.subscribe(f"{EVENTS}.>", cb=on_event)
        await nc.subscribe(DEAD, cb=on_dead)
        await nc.flush()
        await nc.flush()
        return nc

    def close(self) -> None:
        try:
            self.agent.kill()
            self.run(self.nc.drain(), timeout_s=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.server.stop()

    def context(self) -> str:
        """The agent's and the server's last log lines, for failure messages."""
        lines = [_brief(raw) for raw in self.agent.logs().splitlines()[-40:]]
        agent = [line for i, line in enumerate(lines) if i == 0 or line != lines[i - 1]]
        server_log = self.server.store_dir / "nats-server.log"
        srv = [s for s in server_log.read_text(errors="replace").splitlines() if "[INF]" not in s]
        return (
            f"\n--- agent log tail ({self.agent.log}), repeats collapsed:\n"
            + "\n".join(agent[-15:])
            + "\n--- nats-server warnings and errors:\n"
            + "\n".join(line[:300] for line in srv[-8:])
        )

    def wait(self, what: str, cond: Callable[[], bool], timeout_s: float) -> None:
        """Wait for `cond`; fail at once if the agent dies or logs trouble, loudly on timeout."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            self.healthy(f"awaiting {what}", ready=False)
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g}s awaiting {what}")
            time.sleep(0.02)

    def refs(self) -> str:
        return git(self.remote, "for-each-ref", "--format=%(refname) %(objectname)")

    def take_dir(self) -> str:
        """A real directory of the remote, used by no other message."""
        assert self._next_dir < CANARIES, "the rig ran out of canary directories"
        path = f"canaries/c{self._next_dir:03d}/"
        self._next_dir += 1
        assert f"{path}keep.txt" in remote_tree(self.remote), f"{path} vanished before its use"
        return path

    def sign(self, headers: dict[str, str] | None, body: bytes) -> dict[str, str] | None:
        """The v2 signature headers (id, time, HMAC) when the rig has a key."""
        if self.key is None:
            return headers
        msg_id = (headers or {}).get("Nats-Msg-Id") or f"signed-{uuid.uuid4().hex}"
        return signed_headers(body, self.key, headers, msg_id=msg_id)

    def publish(self, body: bytes, headers: dict[str, str] | None) -> bool:
        """Publish like bee-keeper; False when JetStream dropped it as a duplicate."""

        async def go() -> bool:
            if self.jetstream:
                ack = await self.nc.jetstream().publish(SUBJECT, body, headers=headers)
                return not ack.duplicate
            await self.nc.publish(SUBJECT, body, headers=headers)
            await self.nc.flush()
            return True

        stored = self.run(go())
        self.published += stored
        return stored

    async def _consumer(self) -> Any:
        return await self.nc.jetstream().consumer_info("AURA_INJURIES", "auto-healer")

    # --- invariants -------------------------------------------------------------------------

    def settled(self, what: str) -> None:
        """JetStream: every stored message delivered once, none pending, every one settled.

        `delivered.consumer_seq` counts deliveries, redeliveries included, while the stream
        holds only injuries: the two sequences differ once anything was delivered twice.
        """
        if not self.jetstream:
            return
        last: list[Any] = []

        def quiet() -> bool:
            last[:] = [c := self.run(self._consumer())]
            return bool(c.num_pending == 0 and c.num_ack_pending == 0)

        try:
            self.wait(f"the durable consumer to settle {what}", quiet, 10.0)
        except AssertionError as exc:
            c = last[0]
            raise AssertionError(
                f"{exc}: num_pending={c.num_pending} num_ack_pending={c.num_ack_pending} "
                f"num_redelivered={c.num_redelivered}"
            ) from None
        c = last[0]
        assert c.delivered.consumer_seq == c.delivered.stream_seq, (
            f"{what}: {c.delivered.consumer_seq} deliveries of {c.delivered.stream_seq} messages"
        )
        assert c.ack_floor.stream_seq == c.delivered.stream_seq, f"{what}: not all settled"

    def healthy(self, what: str, *, ready: bool = True) -> None:
        """The agent is alive (and ready), and logged nothing alarming since the last look."""
        assert self.agent.proc.poll() is None, f"the agent exited {self.agent.proc.returncode}"
        with open(self.agent.log, "rb") as f:
            f.seek(self._log_offset)
            chunk = f.read()
        cut = chunk.rfind(b"\n") + 1
        self._log_offset += cut
        bad = []
        for raw in chunk[:cut].splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                bad.append(raw.decode(errors="replace")[:300])
                continue
            if line.get("event") in BAD_LOG_EVENTS or line.get("level") in ("error", "critical"):
                bad.append(_brief(raw.decode(errors="replace")))
        assert not bad, f"{what}, the agent logged:\n" + "\n".join(bad[:6])
        if ready:
            status, _ = self.agent.get("/readyz")
            assert status == 200, f"{what}, the agent is not ready (/readyz {status})"

    def deliver(self, sent: Sent) -> dict[str, Any] | None:
        """Publish one message and check every invariant; returns its outcome event."""
        if self.broken:
            raise AssertionError(f"an earlier failure left this rig unusable: {self.broken}")
        try:
            return self._deliver(sent)
        except AssertionError as exc:
            self.broken = f"{sent.label[:200]}: {str(exc)[:400]}"
            raise AssertionError(f"[{sent.label}] {exc}{self.context()}") from None

    def _deliver(self, sent: Sent) -> dict[str, Any] | None:
        n_ev, n_dead = self._seen
        assert (len(self.events), len(self.dead)) == self._seen, (
            f"stray events or dead letters arrived since the last message: "
            f"{[s for s, _ in self.events[n_ev:]]}, {len(self.dead) - n_dead} dead letters"
        )
        refs = self.refs()
        assert len(sent.body) + header_bytes(sent.headers) <= self.max_payload, "test bug: too big"
        if not self.publish(sent.body, sent.headers):
            self.settled(f"the duplicate {sent.label}")
            assert len(self.events) == n_ev, "a message JetStream dropped as duplicate got an event"
            self.healthy(f"after {sent.label}")
            return None
        timeout = 30.0 if sent.target else 15.0
        self.wait(f"the outcome event of {sent.label}", lambda: len(self.events) > n_ev, timeout)
        self.settled(sent.label)
        self.healthy(f"after {sent.label}")
        subjects = [s for s, _ in self.events[n_ev:]]
        assert len(subjects) == 1, f"one message, {len(subjects)} outcome events: {subjects}"
        subject, data = self.events[n_ev]
        event = _strict_json(data)
        kind = event.get("event_type")
        assert subject == f"{EVENTS}.{kind}", f"event_type {kind!r} published on {subject}"
        assert {"success", "timestamp", "metadata"} <= set(event), f"event shape: {list(event)}"
        meta = event["metadata"]
        reason = str(meta.get("reason"))[:300]
        assert kind in sent.expect, f"outcome {kind} ({reason}); expected one of {set(sent.expect)}"
        if sent.msg_id is not None and meta.get("injury_id") is not None:
            assert meta["injury_id"] == expected_id(sent.msg_id), (
                f"event is for {meta['injury_id']!r}"
            )
        want_dead = 1 if kind == REJECTED else 0
        if want_dead:
            self.wait(f"the dead letter of {sent.label}", lambda: len(self.dead) > n_dead, 5.0)
        assert len(self.dead) - n_dead == want_dead, (
            f"outcome {kind} ({reason}) but {len(self.dead) - n_dead} dead letters"
        )
        if self.jetstream:
            stream = self.run(self.nc.jetstream().stream_info("AURA_DEAD_LETTERS"))
            assert stream.state.messages == len(self.dead), (
                "dead letters and AURA_DEAD_LETTERS differ"
            )
        if want_dead:
            data, headers = self.dead[n_dead]
            # Near max_payload there is no room for the agent's headers: the body alone may go.
            if len(sent.body) + header_bytes(sent.headers) + 4096 < self.max_payload:
                assert data == sent.body, "the dead letter is not the message as sent"
                assert headers.get("Auto-Healer-Outcome") == "rejected", f"dead letter {headers}"
        after = self.refs()
        if kind == HEALED:
            assert after != refs, f"healed ({reason}) but no ref of the remote moved"
        else:
            assert after == refs, f"outcome {kind} ({reason}) yet the remote changed"
        if sent.target:
            present = f"{sent.target}keep.txt" in remote_tree(self.remote)
            assert present == (kind != HEALED), f"{sent.target} present={present} after {kind}"
        self._seen = (len(self.events), len(self.dead))
        return dict(event)

    def canary(self) -> None:
        """A plain valid injury for a real directory is healed: the agent still works."""
        path = self.take_dir()
        body = json.dumps(injury(path)).encode()
        msg_id = f"canary-{uuid.uuid4().hex}"
        headers = self.sign({"Nats-Msg-Id": msg_id}, body)
        self.deliver(Sent(f"canary {path}", body, headers, frozenset({HEALED}), msg_id, path))

    def totals(self) -> None:
        """Over the whole module: one event per received message, all settled, none redelivered."""
        assert len(self.events) == self.published, (
            f"{self.published} messages received, {len(self.events)} outcome events"
        )
        self.settled("every message")


def _brief(raw: str) -> str:
    """One agent log line, short: its event, error and the end of any traceback."""
    try:
        line = json.loads(raw)
    except ValueError:
        return raw[:300]
    parts = [str(line.get(k)) for k in ("level", "event", "error", "reason") if line.get(k)]
    if line.get("exception"):
        parts.append("| " + " | ".join(str(line["exception"]).strip().splitlines()[-3:]))
    return " ".join(parts)[:700]


def _strict_json(data: bytes) -> dict[str, Any]:
    def refuse(name: str) -> Any:
        raise AssertionError(f"the outcome event holds {name}: not valid JSON")

    doc = json.loads(data, parse_constant=refuse)
    assert isinstance(doc, dict), "the outcome event is not a JSON object"
    return doc
