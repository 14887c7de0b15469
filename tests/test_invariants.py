"""Invariants of the agent as properties over a real nats-server, a real remote and a real agent.

For every message, hand-written or generated: the agent stays connected and keeps healing (a
canary injury for a real directory is healed), the message is settled exactly once (JetStream:
nothing pending, nothing redelivered), exactly one outcome event is published, a dead letter is
written exactly for a rejected one, and the remote changes only when the event says `healed`.
One agent serves a whole module per mode (JetStream with a signing key, core without).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import injury
from tests.invariant_cases import (
    ESC_OR_R,
    H_OR_R,
    NASTY,
    SKIP_OR_R,
    H,
    R,
    dumps,
)
from tests.invariant_support import Rig, Sent, header_bytes

pytestmark = pytest.mark.timeout(600)
KEY = b"invariants-signing-key"
CANARY_EVERY = 4
_counter = count()


class RigPool:
    """The module's rig; a fresh one replaces it only after a failure broke it, so one failing
    case does not decide the verdict of the next test."""

    def __init__(self, factory: pytest.TempPathFactory, **kwargs: Any) -> None:
        self.factory, self.kwargs = factory, kwargs
        self.rig: Rig | None = None

    def current(self) -> Rig:
        if self.rig is not None and self.rig.broken:
            self.rig.close()
            self.rig = None
        if self.rig is None:
            mode = "js" if self.kwargs["jetstream"] else "core"
            self.rig = Rig(self.factory.mktemp(f"invariants-{mode}"), **self.kwargs)
        return self.rig

    def close(self) -> None:
        if self.rig is not None:
            self.rig.close()


@pytest.fixture(scope="module", params=["jetstream", "core"])
def rigs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RigPool]:
    """One agent per mode for the whole module, isolated from the developer's git and state."""
    jetstream = request.param == "jetstream"
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("home")
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_STATE_HOME", str(home / "state"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for var in ("DRY_RUN", "NATS_URL", "PAGER_WEBHOOK_URL", "INJURY_SIGNING_KEY"):
            mp.delenv(var, raising=False)
        pool = RigPool(
            tmp_path_factory, jetstream=jetstream, signing_key=KEY if jetstream else None
        )
        try:
            yield pool
        finally:
            pool.close()


@pytest.fixture
def rig(rigs: RigPool) -> Rig:
    return rigs.current()


def _maybe_canary(rig: Rig) -> None:
    if next(_counter) % CANARY_EVERY == CANARY_EVERY - 1:
        rig.canary()


@pytest.mark.parametrize("name", list(NASTY))
def test_hostile_message_keeps_invariants(rig: Rig, name: str) -> None:
    """A hand-written hostile message keeps every invariant, and a canary is healed after it."""
    message = NASTY[name](rig)
    rig.deliver(message)
    if message.target is None:
        rig.canary()


# --- generated messages --------------------------------------------------------------------


class Long(str):
    """A long string that prints short in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} chars: {self[:12]!r}...>"


HOSTILE = [
    "\udc80",
    "\ud800",
    "a\udc80b",
    "\u2028",
    "\x00",
    "\u202e",
    "..",
    "/",
    Long("x" * 100_000),
]
EXISTING = re.compile(r"core|canaries|pyproject")
TOKEN = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=60))
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class Spec:
    """A generated message, kept small to print: big bodies are a seed and a size."""

    kind: str  # binary | big | json | field | extra
    data: Any
    msg_id: str | None  # None: no header; else a prefix that gets a unique suffix
    junk: tuple[tuple[str, str], ...]
    signature: str | None  # "valid", None (absent) or garbage

    def headers(self, rig: Rig, body: bytes) -> dict[str, str] | None:
        headers = dict(self.junk)
        if self.msg_id is not None:
            blank = not self.msg_id.strip()
            headers["Nats-Msg-Id"] = self.msg_id if blank else f"{self.msg_id}{uuid.uuid4().hex}"
        if self.signature == "valid":
            return rig.sign(headers, body) or None
        if self.signature is not None:
            headers["Aura-Signature"] = self.signature
        return headers or None

    def build(self, rig: Rig) -> Sent:
        target = None
        if self.kind == "binary":
            body, expect = self.data, R
        elif self.kind == "big":
            seed, size = self.data
            room = rig.max_payload - header_bytes(self.headers(rig, b""))
            body, expect = (seed * (size // len(seed) + 1))[: min(size, room)], R
        elif self.kind == "json":
            body, expect = dumps(self.data), R
        elif self.kind == "field":
            name, value, expect = self.data
            body = dumps({**injury(f"zz/absent-{uuid.uuid4().hex}/"), name: value})
        else:
            key, value = self.data
            target = rig.take_dir()
            body = dumps({**injury(target), key: value})
            expect = H_OR_R if _has_surrogate(key) or _has_surrogate(value) else H
        headers = self.headers(rig, body)
        if rig.key is not None and self.signature != "valid":
            expect = R
        sent_id = (headers or {}).get("Nats-Msg-Id", "")
        if rig.key is not None and ((sent_id and not sent_id.strip()) or len(sent_id) > 256):
            expect = R  # the signature covers the id: one that cannot be signed is refused
        msg_id = (headers or {}).get("Nats-Msg-Id", "").strip() or None
        return Sent(repr(self)[:300], body, headers, expect, msg_id, target)


def _has_surrogate(value: Any) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in str(value))


def _not_injury(value: Any) -> bool:
    return not (isinstance(value, dict) and "injury_type" in value)


FIELDS = {
    "injury_type": (hostile_text.filter(lambda t: t not in ("unauthorized_directory",)), ESC_OR_R),
    "affected_path": (hostile_text.filter(lambda t: not EXISTING.search(t)), SKIP_OR_R),
    "severity": (hostile_text.filter(lambda t: t not in ("low", "medium", "high", "critical")), R),
    "recommended_action": (hostile_text.filter(lambda t: t != "delete_directory"), ESC_OR_R),
    "auto_heal": (st.one_of(st.integers(), st.text(max_size=5), st.none()), R),
    "timestamp": (st.one_of(st.floats(max_value=-0.001), st.text(max_size=5), st.none()), R),
}


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    kind = draw(st.sampled_from(["binary", "big", "json", "field", "field", "extra"]))
    if kind == "binary":
        data: Any = draw(st.binary(max_size=2048))
    elif kind == "big":
        # Sizes up to max_payload (clipped to what fits beside the headers), often at the limit.
        size = draw(st.integers(64 * 1024, 1024 * 1024) | st.integers(1024 * 1024 - 512, 1024**2))
        data = (draw(st.binary(min_size=1, max_size=32)), size)
    elif kind == "json":
        data = draw(json_value.filter(_not_injury))
    elif kind == "field":
        name = draw(st.sampled_from(sorted(FIELDS)))
        strategy, expect = FIELDS[name]
        data = (name, draw(strategy), expect)
    else:
        key = draw(hostile_text.filter(lambda k: k not in injury("x")))
        data = (key, draw(st.one_of(hostile_text, json_value)))
    msg_id = draw(st.one_of(st.none(), st.sampled_from(["", "   "]), header_text))
    if draw(st.booleans()):
        msg_id = Long((msg_id or "") + "L" * draw(st.integers(1000, 8000)))
    name = st.text(TOKEN, min_size=1, max_size=20).filter(
        lambda n: not n.lower().startswith("nats") and n.lower() != "aura-signature"
    )
    junk = tuple(draw(st.dictionaries(name, header_text, max_size=4)).items())
    signature = draw(
        st.one_of(st.just("valid"), st.just("valid"), st.none(), header_text, st.just("sha256="))
    )
    return Spec(kind, data, msg_id, junk, signature)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the agent is a stateful process
    suppress_health_check=list(HealthCheck),
)
@given(spec=specs())
def test_generated_message_keeps_invariants(rig: Rig, spec: Spec) -> None:
    """A generated body and headers keep every invariant; every few, a canary is healed."""
    rig.deliver(spec.build(rig))
    _maybe_canary(rig)


def test_every_message_settled_once(rig: Rig) -> None:
    """Over the module: the agent still heals, and there is one event per message received."""
    rig.canary()
    rig.totals()
