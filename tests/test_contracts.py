"""The bloodstream contract: the five topics' payloads, injury validation and the stable id."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from auto_healer.contracts import (
    AuditReport,
    BrainDead,
    DomainEvent,
    Heartbeat,
    Injury,
    Severity,
    describe_validation_error,
    event_subject,
    injury_id,
    model_for_subject,
    parse_injury,
    parse_injury_obj,
)
from auto_healer.errors import InjuryRejected
from auto_healer.jsontext import canonical_json, loads
from auto_healer.sources.files import read_injuries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.conftest import injury

REQUIRED = (
    "timestamp",
    "injury_type",
    "affected_path",
    "severity",
    "recommended_action",
    "auto_heal",
)


def test_injury_fields_parse_from_json() -> None:
    """A bee-keeper injury parses into typed fields, severity as the enum."""
    parsed = parse_injury(json.dumps(injury("core/src/x/")).encode())
    inj = parsed.injury
    assert inj.timestamp == 1735920000.456
    assert inj.injury_type == "unauthorized_directory"
    assert inj.affected_path == "core/src/x/"
    assert inj.severity is Severity.HIGH
    assert inj.recommended_action == "delete_directory"
    assert inj.auto_heal is True


@pytest.mark.parametrize("severity", ["low", "medium", "high", "critical"])
def test_every_severity_is_accepted(severity: str) -> None:
    """The four severities of the contract are accepted."""
    assert parse_injury_obj(injury("a", severity=severity)).injury.severity.value == severity


def test_unknown_extra_fields_are_kept() -> None:
    """Publishers evolve: unknown fields survive parsing, on the model and in the raw payload."""
    parsed = parse_injury_obj(injury("a", audit_id="A-17", nested={"k": [1, 2]}))
    assert parsed.injury.model_extra == {"audit_id": "A-17", "nested": {"k": [1, 2]}}
    assert parsed.raw["audit_id"] == "A-17"


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_field_is_rejected_naming_it(field: str) -> None:
    """A missing required field is rejected with a message that names it."""
    payload = injury("a")
    del payload[field]
    with pytest.raises(InjuryRejected, match=f"field '{field}'"):
        parse_injury_obj(payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", "yesterday"),
        ("timestamp", True),
        ("timestamp", -1),
        ("injury_type", 7),
        ("injury_type", "has space"),
        ("affected_path", ["a"]),
        ("affected_path", ""),
        ("affected_path", "a\x00b"),
        ("severity", "urgent"),
        ("severity", "HIGH"),
        ("severity", ["high"]),
        ("severity", {"level": "high"}),
        ("recommended_action", None),
        ("auto_heal", "yes"),
        ("auto_heal", 1),
    ],
)
def test_wrong_typed_field_is_rejected_naming_it(field: str, value: object) -> None:
    """A wrong-typed or out-of-range field is an `InjuryRejected` naming it, never a crash."""
    payload = {**injury("a"), field: value}
    with pytest.raises(InjuryRejected, match=f"field '{field}'"):
        parse_injury_obj(payload)


def test_severity_error_lists_the_allowed_values() -> None:
    """A bad severity says which values are allowed."""
    with pytest.raises(InjuryRejected, match="low, medium, high, critical"):
        parse_injury_obj(injury("a", severity="urgent"))


@pytest.mark.parametrize("timestamp", [0, 0.0, 0.5, 1])
def test_timestamps_from_zero_up_are_accepted(timestamp: float) -> None:
    """The Unix epoch itself and fractions of a second are valid timestamps."""
    assert parse_injury_obj(injury("a", timestamp=timestamp)).injury.timestamp == timestamp


def test_negative_timestamp_error_says_what_is_valid() -> None:
    """A negative timestamp is rejected saying a finite, non-negative Unix time is expected."""
    with pytest.raises(InjuryRejected) as exc:
        parse_injury_obj(injury("a", timestamp=-0.5))
    assert str(exc.value) == (
        "invalid injury: field 'timestamp': value error, must be a finite, non-negative unix time"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("injury_type", "A-z_0.9:x"),
        ("injury_type", "t" * 200),
        ("affected_path", "p" * 4096),
        ("recommended_action", ""),
        ("recommended_action", "r" * 200),
    ],
)
def test_field_limits_are_inclusive(field: str, value: str) -> None:
    """Every allowed character of injury_type and each maximum length itself are accepted."""
    assert getattr(parse_injury_obj({**injury("a"), field: value}).injury, field) == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("injury_type", ""),
        ("injury_type", "t" * 201),
        ("injury_type", "a/b"),
        ("affected_path", "p" * 4097),
        ("recommended_action", "r" * 201),
    ],
)
def test_field_limits_reject_one_past(field: str, value: str) -> None:
    """One character past a limit, or outside injury_type's alphabet, is rejected by name."""
    with pytest.raises(InjuryRejected, match=f"field '{field}'"):
        parse_injury_obj({**injury("a"), field: value})


def test_severity_may_be_given_as_the_enum() -> None:
    """Code that builds an injury may pass the Severity enum itself, not only its JSON string."""
    fields = {**injury("a"), "severity": Severity.CRITICAL}
    assert Injury.model_validate(fields).severity is Severity.CRITICAL


@pytest.mark.parametrize(("payload", "kind"), [([1], "list"), ("x", "str"), (None, "NoneType")])
def test_non_object_payload_error_names_its_type(payload: object, kind: str) -> None:
    """A payload that is not a JSON object is rejected naming what it is instead."""
    with pytest.raises(InjuryRejected) as exc:
        parse_injury_obj(payload)
    assert str(exc.value) == f"payload must be a JSON object, got {kind}"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_loads_rejects_the_non_json_constants(constant: str) -> None:
    """Python's json accepts NaN and Infinity; the contract's strict JSON does not."""
    with pytest.raises(ValueError, match=f"^{constant} is not valid JSON$"):
        loads(f'{{"x": [1, {constant}]}}')
    with pytest.raises(InjuryRejected, match=f"not valid JSON: {constant} is not valid JSON"):
        parse_injury(json.dumps(injury("a", extra=float(constant.lower()))).encode())


def test_loads_reads_str_and_bytes() -> None:
    """Both a str and UTF-8 bytes decode to the same value."""
    assert loads('{"a": [1.5, null]}') == loads(b'{"a": [1.5, null]}') == {"a": [1.5, None]}


def test_a_decoded_inf_cannot_be_hashed_canonically() -> None:
    """An infinity that reached a decoded payload is rejected as not canonical JSON."""
    with pytest.raises(InjuryRejected, match=r"^payload is not canonical JSON: "):
        parse_injury_obj(injury("a", extra=float("inf")))


def test_canonical_json_is_sorted_compact_utf8() -> None:
    """Keys sorted, no spaces, non-ASCII kept as UTF-8 rather than escaped."""
    payload = {"b": 1, "a": [1, {"z": None, "y": "hé"}], "é": True}
    expected = '{"a":[1,{"y":"hé","z":null}],"b":1,"é":true}'.encode()
    assert canonical_json(payload) == expected


def test_canonical_json_refuses_nan() -> None:
    """NaN has no JSON spelling, so it has no canonical form."""
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json({"x": float("nan")})


def test_id_is_sha256_of_the_canonical_payload() -> None:
    """Without a header the id is `sha256-` and the first 24 hex digits of the canonical hash."""
    canonical = (
        b'{"affected_path":"a","auto_heal":true,"injury_type":"unauthorized_directory",'
        b'"recommended_action":"delete_directory","severity":"high","timestamp":1735920000.456}'
    )
    expected = "sha256-" + hashlib.sha256(canonical).hexdigest()[:24]
    assert injury_id(injury("a")) == injury_id(injury("a"), {}) == expected
    assert injury_id(injury("a"), {"Nats-Msg-Id": " bee-7 "}) == "bee-7"


def test_body_of_exactly_the_size_limit_is_accepted() -> None:
    """The size limit is inclusive: a 1 MiB body parses; one byte more is rejected, saying so."""
    body = json.dumps(injury("a", pad="")).encode()
    body = json.dumps(injury("a", pad="x" * (1024 * 1024 - len(body)))).encode()
    assert len(body) == 1024 * 1024
    assert parse_injury(body).raw["pad"].startswith("x")
    with pytest.raises(InjuryRejected) as exc:
        parse_injury(body + b" ")
    assert str(exc.value) == "payload is 1048577 bytes, over the 1048576 limit"


def test_validation_error_names_every_field_and_the_payload_itself() -> None:
    """Every offending field is named, `; `-separated; an error of the whole value says payload."""
    payload = injury("a")
    del payload["timestamp"], payload["severity"]
    with pytest.raises(ValidationError) as exc:
        Injury.model_validate(payload)
    assert describe_validation_error(exc.value) == (
        "field 'timestamp': field required; field 'severity': field required"
    )
    with pytest.raises(ValidationError) as exc:
        Injury.model_validate("x")
    assert describe_validation_error(exc.value) == (
        "field 'payload': input should be a valid dictionary or instance of injury"
    )


@pytest.mark.parametrize("event_type", ["injury_healed", "X", "Xray-2"])
def test_event_subject_accepts_any_single_token(event_type: str) -> None:
    """Any non-empty token without `.`, `*`, `>` or whitespace is an event subject."""
    assert event_subject(event_type) == f"aura.hive.events.{event_type}"


@pytest.mark.parametrize("event_type", ["", "a.b", "a*", "a>", "a b", "a\tb"])
def test_event_subject_refuses_wildcards_and_separators(event_type: str) -> None:
    """A token that is empty or would change the subject's meaning is refused."""
    with pytest.raises(ValueError, match="single subject token"):
        event_subject(event_type)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
        b"[" * 50_000,
        b'{"timestamp": NaN}',
        b"x" * (1024 * 1024 + 1),
    ],
)
def test_unparseable_bodies_are_rejected(body: bytes) -> None:
    """Bodies that are not one JSON object (or too big, or NaN, or too deep) are rejected."""
    with pytest.raises(InjuryRejected):
        parse_injury(body)


def test_nan_in_an_extra_field_is_rejected_not_a_crash() -> None:
    """NaN/Infinity in an unknown field cannot be hashed canonically: rejected, not a crash."""
    body = json.dumps(injury("a", extra=float("nan"))).encode()
    with pytest.raises(InjuryRejected, match="JSON"):
        parse_injury(body)
    with pytest.raises(InjuryRejected):
        parse_injury_obj(injury("a", extra=float("inf")))


def test_id_is_the_nats_msg_id_header_when_present() -> None:
    """The injury id is the `Nats-Msg-Id` header when the publisher set one."""
    body = json.dumps(injury("a")).encode()
    assert parse_injury(body, {"Nats-Msg-Id": "bee-42"}).id == "bee-42"
    assert parse_injury(body, {"Nats-Msg-Id": "  "}).id.startswith("sha256-")


def test_id_ignores_key_order_and_spacing() -> None:
    """Without a header the id hashes the canonical payload: key order and spacing don't count."""
    payload = injury("core/x", extra={"b": 1, "a": [1, 2]})
    compact = json.dumps(payload, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(payload.items()))), indent=4).encode()
    assert parse_injury(compact).id == parse_injury(spaced).id == injury_id(payload)
    assert parse_injury(compact).id != parse_injury_obj(injury("core/y")).id


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=6))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_id_is_stable_under_any_key_order(extra: dict[str, Any]) -> None:
    """Property: whatever extra fields arrive, reordering keys never changes the id."""
    payload = {**extra, **injury("a")}
    reordered = dict(sorted(payload.items(), reverse=True))
    assert injury_id(payload) == injury_id(reordered)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from([*REQUIRED, "x", ""]), _json, max_size=8))
@settings(max_examples=60, deadline=None)
def test_any_payload_is_parsed_or_rejected_never_crashes(payload: dict[str, Any]) -> None:
    """Property: an arbitrary JSON-ish object either parses or raises `InjuryRejected`."""
    try:
        parsed = parse_injury_obj(payload)
    except InjuryRejected:
        return
    assert isinstance(parsed.injury, Injury)


@given(st.binary(max_size=200))
@settings(max_examples=60, deadline=None)
def test_any_bytes_are_parsed_or_rejected_never_crash(body: bytes) -> None:
    """Property: arbitrary message bytes either parse or raise `InjuryRejected`."""
    with contextlib.suppress(InjuryRejected):
        parse_injury(body)


def test_read_injuries_accepts_one_object_a_list_and_json_lines() -> None:
    """INJURIES may be one JSON object, a JSON list, or JSON Lines (blank lines ignored)."""
    one, two = injury("a"), injury("b")
    assert len(read_injuries(json.dumps(one))) == 1
    assert len(read_injuries(json.dumps([one, two]))) == 2
    lines = read_injuries(json.dumps(one) + "\n\n" + json.dumps(two) + "\n")
    assert [p.injury.affected_path for p in lines if not isinstance(p, InjuryRejected)] == [
        "a",
        "b",
    ]


def test_read_injuries_keeps_good_entries_next_to_bad_ones() -> None:
    """A bad entry becomes an `InjuryRejected` in its place naming entry or line; others survive."""
    listed = read_injuries(json.dumps([injury("a"), {"timestamp": 1}]))
    assert not isinstance(listed[0], InjuryRejected)
    assert isinstance(listed[1], InjuryRejected)
    assert "entry 2" in str(listed[1])
    jsonl = read_injuries(json.dumps(injury("a")) + "\n{broken\n")
    assert isinstance(jsonl[1], InjuryRejected)
    assert "line 2" in str(jsonl[1])


def test_read_injuries_rejects_empty_input() -> None:
    """An empty INJURIES input is an error, not silently zero injuries."""
    with pytest.raises(InjuryRejected, match="empty"):
        read_injuries("  \n\n")


def test_the_other_four_topics_validate_and_keep_extras() -> None:
    """Audit, domain event, heartbeat and brain-dead payloads validate and keep extra fields."""
    audit = AuditReport.model_validate(
        {
            "timestamp": 1.0,
            "repo": "hive",
            "commit_sha": "abc",
            "audit_status": "failed",
            "violations": [{"severity": "high", "file": "a.py", "rule": "R1", "message": "m"}],
            "new": 1,
        }
    )
    assert audit.violations[0].rule == "R1"
    assert audit.model_extra == {"new": 1}
    event = DomainEvent.model_validate(
        {"success": True, "event_type": "injury_healed", "timestamp": 2.0}
    )
    assert event.subject == "aura.hive.events.injury_healed"
    beat = Heartbeat.model_validate({"status": "active", "timestamp": 3.0, "service": "h"})
    assert beat.metadata == {}
    dead = BrainDead.model_validate({"timestamp": 4.0, "error": "llm down"})
    assert dead.fallback_action is None


@pytest.mark.parametrize(
    ("model", "payload", "field"),
    [
        (
            AuditReport,
            {
                "timestamp": 1.0,
                "repo": "r",
                "commit_sha": "c",
                "audit_status": "s",
                "violations": [{"severity": "h"}],
            },
            "violations.0.file",
        ),
        (DomainEvent, {"success": "yes", "event_type": "e", "timestamp": 1.0}, "success"),
        (Heartbeat, {"status": "sleeping", "timestamp": 1.0, "service": "s"}, "status"),
        (BrainDead, {"timestamp": 1.0}, "error"),
    ],
)
def test_other_topics_reject_bad_fields(model: Any, payload: dict[str, Any], field: str) -> None:
    """Each topic model rejects a missing or wrong-typed field, naming it."""
    with pytest.raises(ValidationError) as exc:
        model.model_validate(payload)
    assert f"field '{field}'" in describe_validation_error(exc.value)


def test_subjects_map_to_their_models() -> None:
    """Every bloodstream subject maps to its payload model; unknown subjects to None."""
    assert model_for_subject("aura.hive.injury") is Injury
    assert model_for_subject("aura.hive.audit") is AuditReport
    assert model_for_subject("aura.hive.heartbeat") is Heartbeat
    assert model_for_subject("aura.core.brain_dead") is BrainDead
    assert model_for_subject("aura.hive.events.injury_healed") is DomainEvent
    assert model_for_subject("aura.hive.other") is None
    with pytest.raises(ValueError, match="single subject token"):
        event_subject("a.b")


def test_the_affected_path_is_normalised_once_at_parse_time() -> None:
    """A safe path is kept in normal form; an unsafe one has no path and says why."""
    from auto_healer.contracts import parse_injury_obj

    from tests.conftest import injury

    safe = parse_injury_obj(injury("./core//src/x/"))
    assert (safe.path, safe.path_error) == ("core/src/x", None)
    unsafe = parse_injury_obj(injury("../etc"))
    assert unsafe.path is None
    assert unsafe.path_error == "affected_path '../etc' contains '..', which could escape"


def test_canonical_json_keeps_a_lone_surrogate_as_its_bytes() -> None:
    """A lone surrogate is encoded as its own three bytes, so its payload keeps a stable id."""
    from auto_healer.contracts import injury_id
    from auto_healer.jsontext import canonical_json

    assert canonical_json({"n": "a\udc80"}) == b'{"n":"a\xed\xb2\x80"}'
    assert injury_id({"n": "a\udc80"}) == injury_id({"n": "a\udc80"})
    assert injury_id({"n": "a\udc80"}) != injury_id({"n": "a\udc81"})


def test_a_number_that_overflows_a_float_is_not_valid_json() -> None:
    """1e999 would become Infinity, which no event could carry: the payload is rejected."""
    import pytest
    from auto_healer.errors import InjuryRejected
    from auto_healer.jsontext import loads

    with pytest.raises(ValueError, match="out of range"):
        loads('{"x": 1e999}')
    with pytest.raises(InjuryRejected, match="out of range"):
        parse_injury(b'{"x": -1e999}')
    assert loads('{"x": 1e308}') == {"x": 1e308}


def test_an_entry_of_a_json_document_is_held_to_the_message_size_limit() -> None:
    """An entry exactly MAX_PAYLOAD_BYTES long (compact) is read; one byte more is refused."""
    import json as _json

    from auto_healer.contracts import MAX_PAYLOAD_BYTES
    from auto_healer.errors import InjuryRejected

    from tests.conftest import injury

    base = injury("a/", pad="")
    room = MAX_PAYLOAD_BYTES - len(canonical_json(base))
    fits, over = injury("a/", pad="p" * room), injury("a/", pad="p" * (room + 1))
    [ok] = read_injuries(_json.dumps([fits]))
    assert not isinstance(ok, InjuryRejected)
    [refused] = read_injuries(_json.dumps([over]))
    assert isinstance(refused, InjuryRejected)
    size = MAX_PAYLOAD_BYTES + 1
    assert str(refused) == f"entry 1: payload is {size} bytes, over the {MAX_PAYLOAD_BYTES} limit"


def test_a_json_lines_line_that_is_not_utf8_is_refused_by_line_and_character() -> None:
    """Text decoded with surrogateescape: the bad line is refused in its place, naming the byte."""

    text = b'{"a": 1}\nab\xff\n'.decode("utf-8", "surrogateescape")
    results = read_injuries(text)
    assert str(results[1]) == (
        "line 2: payload is not valid JSON: 'utf-8' codec can't decode byte 0xff in position 2: "
        "invalid start byte"
    )


def test_an_overflowing_number_is_named_by_its_first_40_characters() -> None:
    """The reason quotes at most 40 characters of a huge number."""
    import pytest
    from auto_healer.jsontext import loads

    number = "9" * 50 + "e999"
    with pytest.raises(ValueError, match=f"^number {'9' * 40} is out of range$"):
        loads(number)


def test_the_msg_id_is_read_in_any_letter_case_and_made_safe() -> None:
    """A replay cannot change an injury's id by spelling the header differently; an id too
    long or with control characters is hashed, never logged or committed raw."""
    from auto_healer.contracts import MSG_ID_MAX_CHARS, injury_id, msg_id_of

    payload = {"a": 1}
    assert injury_id(payload, {"nats-msg-id": "inj-1"}) == "inj-1"
    assert injury_id(payload, {"NATS-MSG-ID": " inj-1 "}) == "inj-1"
    assert msg_id_of({"Nats-Msg-Id": "exact", "nats-msg-id": "other"}) == "exact"
    assert msg_id_of({"nats-msg-id": "  "}) is None
    assert msg_id_of({"Nats-Msg-Id": "ñ-" + "i" * (MSG_ID_MAX_CHARS - 2)}) == "ñ-" + "i" * 198
    long = msg_id_of({"Nats-Msg-Id": "i" * (MSG_ID_MAX_CHARS + 1)})
    assert long is not None
    assert long.startswith("msgid-sha256-")
    assert len(long) == len("msgid-sha256-") + 24
    assert long != msg_id_of({"Nats-Msg-Id": "i" * (MSG_ID_MAX_CHARS + 2)})
    assert (msg_id_of({"Nats-Msg-Id": "a\u2028b"}) or "").startswith("msgid-sha256-")
    assert (msg_id_of({"Nats-Msg-Id": "a\tb"}) or "").startswith("msgid-sha256-")


def test_the_exact_msg_id_header_wins_and_a_surrogate_id_is_hashed() -> None:
    """`Nats-Msg-Id` spelled exactly wins over another spelling; a lone surrogate hashes."""
    import hashlib

    from auto_healer.contracts import msg_id_of

    assert msg_id_of({"nats-msg-id": "other", "Nats-Msg-Id": "exact"}) == "exact"
    raw = "a\udc80"
    want = "msgid-sha256-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    assert msg_id_of({"Nats-Msg-Id": raw}) == want
