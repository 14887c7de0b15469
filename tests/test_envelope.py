"""The edge, in-process: a message becomes injuries (one, or an envelope's entries) or
rejections, with stable ids and exact reasons."""

from __future__ import annotations

import json

import pytest
from auto_healer.admission import Gate, Rejection, body_id
from auto_healer.contracts import FREE_TEXT, ParsedInjury
from auto_healer.envelope import MAX_ENTRIES, MAX_TEXT_CHARS, free_text_injury, is_envelope
from auto_healer.errors import InjuryRejected
from auto_healer.sources import Delivery

from tests.conftest import injury


def _admit(doc: object, headers: dict[str, str] | None = None) -> list[ParsedInjury | Rejection]:
    data = json.dumps(doc).encode()
    return Gate().admit(Delivery(data=data, subject="s", received_at=1.7e9, headers=headers or {}))


def _id(doc: object) -> str:
    return body_id(Delivery(data=json.dumps(doc).encode(), subject="s", received_at=0))


def test_the_real_envelope_becomes_one_free_text_injury() -> None:
    """bee-keeper's envelope: a free-text injury with its text, agent and monotonic time."""
    doc = {"agent": "bee.Keeper", "injuries": ["GitHub: Failed."], "timestamp": 81234.5}
    [parsed] = _admit(doc)
    assert isinstance(parsed, ParsedInjury)
    inj = parsed.injury
    assert (inj.injury_type, inj.description, inj.source) == (
        FREE_TEXT,
        "GitHub: Failed.",
        "bee.Keeper",
    )
    assert (inj.severity.value, inj.auto_heal, inj.affected_path) == ("medium", False, ".")
    assert inj.timestamp == 81234.5
    assert inj.epoch_timestamp is None
    assert parsed.when == 1.7e9  # the receive time stands in for a clock that is not a date
    assert parsed.received_at == 1.7e9
    assert parsed.id == _id(doc) + ":0"
    assert parsed.problem.startswith("text:")


def test_entries_get_ids_by_index_and_a_bad_one_is_refused_alone() -> None:
    """Mixed entries: an injury object inherits time and agent; a number is refused by index."""
    doc = {"agent": "a", "timestamp": 5.0, "injuries": [injury("x/", timestamp=None), "t", 42]}
    doc["injuries"][0].pop("timestamp")
    first, second, third = _admit(doc, {"Nats-Msg-Id": "env-1"})
    assert isinstance(first, ParsedInjury) and isinstance(second, ParsedInjury)
    assert (first.id, second.id) == ("env-1:0", "env-1:1")
    assert (first.injury.timestamp, first.injury.source) == (5.0, "a")
    assert first.injury.injury_type == "unauthorized_directory"
    assert third == Rejection(
        "env-1:2", "injuries[2]: an entry must be an injury object or a free-text string, got int"
    )


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("   ", "injuries[0]: an empty free-text injury"),
        (
            "x" * (MAX_TEXT_CHARS + 1),
            f"injuries[0]: free text of {MAX_TEXT_CHARS + 1} characters, over {MAX_TEXT_CHARS}",
        ),
        (
            None,
            "injuries[0]: an entry must be an injury object or a free-text string, got NoneType",
        ),
        (
            {"injury_type": "x"},
            "injuries[0]: invalid injury: field 'affected_path': field required",
        ),
    ],
)
def test_bad_entries_name_their_index_and_reason(entry: object, reason: str) -> None:
    """Each kind of bad entry is refused with its index and why."""
    [got] = _admit({"injuries": [entry]})
    assert isinstance(got, Rejection)
    assert got.reason.startswith(reason)


def test_envelope_time_and_agent_fall_back_when_unusable() -> None:
    """A missing, negative, infinite-free or boolean timestamp is replaced by the receive time."""
    for stamp in (None, -1, True, "12"):
        [parsed] = _admit({"injuries": ["t"], "timestamp": stamp, "agent": "  "})
        assert isinstance(parsed, ParsedInjury)
        assert parsed.injury.timestamp == 1.7e9
        assert parsed.injury.source is None
    [parsed] = _admit({"injuries": ["t"], "timestamp": 0, "agent": "x" * 300})
    assert isinstance(parsed, ParsedInjury)
    assert parsed.injury.timestamp == 0.0
    assert parsed.injury.source == "x" * 200


def test_too_many_entries_are_refused_past_the_cap() -> None:
    """Entries past MAX_ENTRIES are one rejection saying how many."""
    got = _admit({"injuries": ["t"] * (MAX_ENTRIES + 2)})
    assert len(got) == MAX_ENTRIES + 1
    last = got[-1]
    assert isinstance(last, Rejection)
    assert (
        last.reason
        == f"injuries[{MAX_ENTRIES}:]: 2 entries over the {MAX_ENTRIES} an envelope may hold"
    )


def test_what_is_an_envelope() -> None:
    """An object with an `injuries` list that is not itself an injury."""
    assert is_envelope({"injuries": []})
    assert not is_envelope({"injuries": "x"})
    assert not is_envelope([{"injuries": []}])
    assert not is_envelope({"injuries": [], "injury_type": "x"})
    assert "source" not in free_text_injury("t", agent=None, timestamp=1.0)


def test_a_plain_injury_and_a_broken_body_are_admitted_as_before() -> None:
    """One injury keeps its id and gets the receive time; garbage is one rejection by body id."""
    [parsed] = _admit(injury("x/"), {"Nats-Msg-Id": "m-1"})
    assert isinstance(parsed, ParsedInjury)
    assert (parsed.id, parsed.received_at) == ("m-1", 1.7e9)
    bad = Delivery(data=b"{", subject="s", received_at=0)
    [rejected] = Gate().admit(bad)
    assert isinstance(rejected, Rejection)
    assert rejected.injury_id == body_id(bad)
    assert rejected.reason.startswith("payload is not valid JSON")


def test_a_signature_is_checked_before_anything_is_parsed() -> None:
    """With a verifier, a refused signature is the one rejection, whatever the body holds."""

    class Refuse:
        def verify(self, body: bytes, headers: object, *, redelivered: bool = False) -> None:
            raise InjuryRejected(f"no (redelivered={redelivered})")

    d = Delivery(data=b'{"injuries": ["a", "b"]}', subject="s", received_at=0, attempt=2)
    assert Gate(Refuse()).admit(d) == [Rejection(body_id(d), "no (redelivered=True)")]


def test_ids_and_what_the_verifier_is_given() -> None:
    """A body id is `sha256-` + 24 hex of the body; the verifier gets the exact body and
    headers, and `redelivered` only from the second delivery on."""
    import hashlib

    seen: list[tuple[bytes, object, bool]] = []

    class Record:
        def verify(self, body: bytes, headers: object, *, redelivered: bool = False) -> None:
            seen.append((body, headers, redelivered))

    d = Delivery(data=b"[1]", subject="s", received_at=0, headers={"X": "y"})
    assert body_id(d) == "sha256-" + hashlib.sha256(b"[1]").hexdigest()[:24]
    Gate(Record()).admit(d)
    Gate(Record()).admit(Delivery(data=b"[1]", subject="s", received_at=0, attempt=2))
    assert seen == [(b"[1]", {"X": "y"}, False), (b"[1]", {}, True)]


def test_an_entry_without_an_agent_has_no_source_and_free_text_escalates() -> None:
    """No `agent`: no `source` key is made up; free text recommends escalation."""
    doc = {"injuries": [injury("x/"), "t"]}
    first, second = _admit(doc)
    assert isinstance(first, ParsedInjury) and isinstance(second, ParsedInjury)
    assert "source" not in first.raw
    assert second.injury.recommended_action == "escalate"
    assert len(_admit({"injuries": ["t"] * MAX_ENTRIES})) == MAX_ENTRIES
