"""Signed injuries: v2 signatures over id, timestamp and body; freshness, replays, legacy v1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog
from auto_healer.cli import main
from auto_healer.embedded import NatsServer
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.settings import load_settings
from auto_healer.signing import (
    SIGNATURE_HEADER,
    SIGNED_AT_HEADER,
    Verifier,
    sign,
    sign_legacy,
    signed_headers,
    verifier_from_settings,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import injury, write_injuries

KEY = b"dev-signing-key"
BODY = json.dumps({"injury_type": "unauthorized_directory", "affected_path": "core/x/"}).encode()
NOW = 1_735_920_000.0
MSG_ID = "Nats-Msg-Id"


class Clock:
    """A settable clock for the verifier."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(clock: Clock | None = None, **kwargs: Any) -> Verifier:
    return Verifier(KEY, clock=clock or Clock(), **kwargs)


def headers(msg_id: str = "inj-1", at: float = NOW, body: bytes = BODY) -> dict[str, str]:
    return signed_headers(body, KEY, msg_id=msg_id, now=at)


def reason(v: Verifier, hdrs: dict[str, str] | None, body: bytes = BODY) -> str:
    with pytest.raises(InjuryRejected) as info:
        v.verify(body, hdrs)
    return str(info.value)


def test_legacy_sign_matches_rfc4231_vector() -> None:
    """sign_legacy() is HMAC-SHA256 in lower-case hex behind `sha256=` (RFC 4231 test case 1)."""
    assert sign_legacy(b"Hi There", b"\x0b" * 20) == (
        "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )


def test_v2_matches_the_documented_three_line_recipe() -> None:
    """A publisher using only hmac+hashlib, as the module docstring says, gets sign()'s value."""
    msg = b"\n".join([b"aura-injury-v2", b"inj-1", b"1735920000", BODY])
    expected = "v2=" + hmac.new(KEY, msg, hashlib.sha256).hexdigest()
    assert sign(BODY, KEY, msg_id="inj-1", signed_at="1735920000") == expected
    assert headers() == {
        MSG_ID: "inj-1",
        SIGNED_AT_HEADER: "1735920000",
        SIGNATURE_HEADER: expected,
    }


def test_valid_signature_is_accepted() -> None:
    """A fresh body signed with the key, its id and the time verifies."""
    verifier().verify(BODY, headers())


def test_signed_headers_keeps_other_headers_and_replaces_stale_ones() -> None:
    """signed_headers keeps unrelated headers and overrides any old id or signature header."""
    old = {"Trace": "t1", "nats-msg-id": "old", "aura-signature": "sha256=" + "0" * 64}
    out = signed_headers(BODY, KEY, old, msg_id="inj-1", now=NOW)
    assert out == {"Trace": "t1", **headers()}
    verifier().verify(BODY, out)


def test_replay_with_a_fresh_msg_id_is_rejected() -> None:
    """A captured injury re-published under a new Nats-Msg-Id no longer verifies."""
    captured = headers("inj-1")
    v = verifier()
    v.verify(BODY, captured)
    assert "bad injury signature" in reason(v, {**captured, MSG_ID: "inj-2"})


def test_replay_with_a_fresh_timestamp_is_rejected() -> None:
    """Moving Aura-Signed-At forward without the key breaks the signature."""
    captured = headers("inj-1", at=NOW - 600)
    moved = {**captured, SIGNED_AT_HEADER: "1735920000"}
    assert "bad injury signature" in reason(verifier(), moved)


def test_same_id_within_the_window_is_a_replay() -> None:
    """The same signed injury delivered twice is accepted once, then refused as a replay."""
    clock = Clock()
    v = verifier(clock)
    v.verify(BODY, headers())
    clock.now += 12
    assert reason(v, headers()) == "replayed injury: id 'inj-1' was already accepted 12s ago"


def test_an_id_is_forgotten_after_max_age_plus_skew() -> None:
    """After max_age + skew the id leaves the cache: a newly signed injury with it verifies."""
    clock = Clock()
    v = verifier(clock, max_age_s=300, max_skew_s=30)
    v.verify(BODY, headers())
    clock.now += 331
    v.verify(BODY, headers(at=clock.now))


def test_cache_is_bounded_and_evicts_the_oldest() -> None:
    """With room for two ids, a third evicts the oldest, whose replay is then not recognised."""
    v = verifier(max_ids=2)
    for msg_id in ("a", "b", "c"):
        v.verify(BODY, headers(msg_id))
    assert "replayed" in reason(v, headers("c"))
    v.verify(BODY, headers("a"))


@pytest.mark.parametrize(
    ("signed_at", "expected"),
    [
        (NOW - 600, "stale injury: signed 600s ago, the limit is 300s (SIGNATURE_MAX_AGE_S)"),
        (0.0, f"stale injury: signed {NOW:.0f}s ago, the limit is 300s (SIGNATURE_MAX_AGE_S)"),
    ],
    ids=["ten-minutes-old", "1970"],
)
def test_old_signatures_are_rejected(signed_at: float, expected: str) -> None:
    """A signature older than max_age_s is refused, saying how old and the limit."""
    assert reason(verifier(), headers(at=signed_at)) == expected


def test_future_beyond_skew_is_rejected_within_skew_accepted() -> None:
    """Up to max_skew_s ahead is clock skew; further ahead is refused."""
    v = verifier(max_skew_s=30)
    v.verify(BODY, headers("near", at=NOW + 30))
    assert reason(v, headers("far", at=NOW + 120)) == (
        "injury signed 120s in the future, beyond the allowed clock skew of 30s "
        "(SIGNATURE_MAX_SKEW_S)"
    )


def test_redelivery_skips_age_and_replay_but_not_the_signature() -> None:
    """JetStream's redelivery of an accepted injury is not a replay, even after max_age."""
    clock = Clock()
    v = verifier(clock)
    v.verify(BODY, headers())
    clock.now += 900
    v.verify(BODY, headers(), redelivered=True)
    with pytest.raises(InjuryRejected, match="bad injury signature"):
        v.verify(BODY, {**headers(), MSG_ID: "other"}, redelivered=True)


def test_legacy_is_rejected_by_default_with_upgrade_steps() -> None:
    """A body-only sha256= signature is refused by default, saying how to upgrade."""
    text = reason(verifier(), {SIGNATURE_HEADER: sign_legacy(BODY, KEY)})
    assert text.startswith("legacy sha256= signature refused")
    assert "Aura-Signed-At" in text and "SIGNATURE_ACCEPT_LEGACY=true" in text


def test_legacy_is_accepted_with_the_flag_and_logged() -> None:
    """With accept_legacy a valid v1 signature verifies and logs a warning without secrets."""
    v = verifier(accept_legacy=True)
    with structlog.testing.capture_logs() as logs:
        v.verify(BODY, {SIGNATURE_HEADER: sign_legacy(BODY, KEY), MSG_ID: "inj-1"})
    assert [(e["event"], e["log_level"], e["msg_id"]) for e in logs] == [
        ("legacy_signature_accepted", "warning", "inj-1")
    ]
    assert KEY.decode() not in repr(logs)
    assert sign_legacy(BODY, KEY).split("=", 1)[1] not in repr(logs)
    bad = {SIGNATURE_HEADER: sign_legacy(BODY, b"another-key")}
    assert "bad injury signature" in reason(v, bad)


def test_header_names_are_case_insensitive() -> None:
    """The three headers are found whatever the case of their names."""
    v = verifier()
    v.verify(BODY, {k.lower(): val for k, val in headers("lower").items()})
    v.verify(BODY, {k.upper(): val for k, val in headers("upper").items()})


def test_names_differing_only_in_case_are_ambiguous() -> None:
    """Two Nats-Msg-Id headers in different case are refused rather than guessed between."""
    hdrs = {**headers(), "nats-msg-id": "inj-2"}
    assert reason(verifier(), hdrs) == "ambiguous headers: Nats-Msg-Id is given 2 times"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({SIGNATURE_HEADER: None}, "unsigned injury"),
        ({SIGNATURE_HEADER: " "}, "unsigned injury"),
        ({SIGNATURE_HEADER: "deadbeef"}, "malformed Aura-Signature"),
        ({SIGNATURE_HEADER: "v2=" + "0" * 63}, "malformed Aura-Signature"),
        ({SIGNATURE_HEADER: "v3=" + "0" * 64}, "malformed Aura-Signature"),
        ({SIGNATURE_HEADER: "v2=" + "g" * 64}, "malformed Aura-Signature"),
        ({MSG_ID: None}, "without a Nats-Msg-Id header"),
        ({MSG_ID: "x" * 257}, "malformed Nats-Msg-Id"),
        ({SIGNED_AT_HEADER: None}, "without an Aura-Signed-At header"),
        ({SIGNED_AT_HEADER: "2025-01-03T16:00:00Z"}, "malformed Aura-Signed-At"),
        ({SIGNED_AT_HEADER: "-5"}, "malformed Aura-Signed-At"),
    ],
)
def test_missing_or_malformed_headers_are_rejected(
    change: dict[str, str | None], expected: str
) -> None:
    """Each missing or malformed header is named in a one-line reason."""
    hdrs: dict[str, str] = {**headers()}
    for name, value in change.items():
        hdrs.pop(name)
        if value is not None:
            hdrs[name] = value
    text = reason(verifier(), hdrs)
    assert expected in text and "\n" not in text


def test_upper_case_hex_is_accepted() -> None:
    """Upper-case hex digits in the signature verify like lower-case ones."""
    hdrs = headers()
    hdrs[SIGNATURE_HEADER] = "v2=" + hdrs[SIGNATURE_HEADER].split("=", 1)[1].upper()
    verifier().verify(BODY, hdrs)


def test_reasons_never_leak_the_key_or_expected_signature() -> None:
    """No rejection reason, nor the verifier's repr, contains the key or an expected value."""
    v = verifier(accept_legacy=True)
    good = headers()
    cases = [
        {**good, SIGNATURE_HEADER: "v2=" + "0" * 64},
        {**good, MSG_ID: "inj-2"},
        {SIGNATURE_HEADER: "sha256=" + "0" * 64},
        headers(at=0),
    ]
    texts = [reason(v, hdrs) for hdrs in cases] + [repr(v)]
    secrets = [KEY.decode(), good[SIGNATURE_HEADER][3:], sign_legacy(BODY, KEY)[7:]]
    assert not [s for s in secrets for t in texts if s in t]


def test_empty_key_is_refused() -> None:
    """An empty key is a configuration mistake, not a key."""
    with pytest.raises(ValueError, match="empty"):
        Verifier(b"")
    with pytest.raises(ValueError, match="empty"):
        signed_headers(BODY, b"", msg_id="x")


def test_verifier_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SIGNATURE_* settings reach the verifier; no key means no verifier; bad limits fail."""
    assert verifier_from_settings(load_settings()) is None
    monkeypatch.setenv("INJURY_SIGNING_KEY", KEY.decode())
    monkeypatch.setenv("SIGNATURE_MAX_AGE_S", "60")
    v = verifier_from_settings(load_settings(), clock=Clock())
    assert v is not None and v.max_age_s == 60 and not v.accept_legacy
    assert "limit is 60s" in reason(v, headers(at=NOW - 61))
    monkeypatch.setenv("SIGNATURE_MAX_AGE_S", "0")
    with pytest.raises(ConfigError, match="signature_max_age_s"):
        load_settings()


@given(body=st.binary(max_size=512), key=st.binary(min_size=1, max_size=64), flip=st.integers(0))
def test_roundtrip_and_any_bit_flip(body: bytes, key: bytes, flip: int) -> None:
    """Every signed body verifies; flipping any one bit of it makes it fail."""
    hdrs = signed_headers(body, key, msg_id="inj-1", now=NOW)
    Verifier(key, clock=Clock()).verify(body, hdrs)
    if body:
        i = flip % (len(body) * 8)
        changed = bytearray(body)
        changed[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InjuryRejected):
            Verifier(key, clock=Clock()).verify(bytes(changed), hdrs)


async def test_published_injury_verifies_and_its_replay_does_not(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto-healer publish` with a key sends v2 headers over real NATS; a re-sent copy fails."""
    monkeypatch.setenv("INJURY_SIGNING_KEY", KEY.decode())
    nc = await nats.connect(nats_server.url)
    sub = await nc.subscribe("aura.hive.injury")
    try:
        file = write_injuries(tmp_path / "i.json", injury("core/a/"), injury("core/b/"))
        code = await asyncio.to_thread(main, ["publish", str(file), "--nats-url", nats_server.url])
        assert code == 0
        msgs = [await sub.next_msg(timeout=10) for _ in range(2)]
        v = Verifier(KEY)
        for msg in msgs:
            v.verify(msg.data, msg.headers)
        ids = {msg.headers[MSG_ID] for msg in msgs}
        assert len(ids) == 2  # random uuid4s without --msg-id
        await nc.publish("aura.hive.injury", msgs[0].data, headers=msgs[0].headers)
        await nc.publish(
            "aura.hive.injury", msgs[0].data, headers={**msgs[0].headers, MSG_ID: "fresh"}
        )
        replays = [await sub.next_msg(timeout=10) for _ in range(2)]
        assert "replayed injury" in reason(v, replays[0].headers, replays[0].data)
        assert "bad injury signature" in reason(v, replays[1].headers, replays[1].data)
    finally:
        await nc.drain()
