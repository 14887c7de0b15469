"""Signed injuries: the `Aura-Signature` header (HMAC-SHA256 of the exact body)."""

from __future__ import annotations

import json

import pytest
from auto_healer.errors import InjuryRejected
from auto_healer.signing import SIGNATURE_HEADER, sign, signed_headers, verify
from hypothesis import given
from hypothesis import strategies as st

KEY = b"dev-signing-key"
BODY = json.dumps({"injury_type": "unauthorized_directory", "affected_path": "core/x/"}).encode()


def test_sign_matches_rfc4231_vector() -> None:
    """sign() is HMAC-SHA256 in lower-case hex behind `sha256=` (RFC 4231 test case 1)."""
    assert sign(b"Hi There", b"\x0b" * 20) == (
        "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )


def test_valid_signature_is_accepted() -> None:
    """A body signed with the key verifies."""
    verify(BODY, {SIGNATURE_HEADER: sign(BODY, KEY)}, KEY)


def test_signed_headers_keeps_other_headers() -> None:
    """signed_headers adds the signature beside existing headers such as Nats-Msg-Id."""
    headers = signed_headers(BODY, KEY, {"Nats-Msg-Id": "inj-1"})
    assert headers == {"Nats-Msg-Id": "inj-1", SIGNATURE_HEADER: sign(BODY, KEY)}
    verify(BODY, headers, KEY)


def test_header_name_is_case_insensitive() -> None:
    """The header is found whatever the case of its name."""
    verify(BODY, {"aura-signature": sign(BODY, KEY)}, KEY)


def test_upper_case_hex_is_accepted() -> None:
    """Upper-case hex digits in the signature verify like lower-case ones."""
    verify(BODY, {SIGNATURE_HEADER: "sha256=" + sign(BODY, KEY).split("=", 1)[1].upper()}, KEY)


@pytest.mark.parametrize("headers", [None, {}, {"Nats-Msg-Id": "x"}, {SIGNATURE_HEADER: " "}])
def test_missing_signature_is_rejected(headers: dict[str, str] | None) -> None:
    """No header (or an empty one) is rejected as unsigned."""
    with pytest.raises(InjuryRejected, match="unsigned"):
        verify(BODY, headers, KEY)


@pytest.mark.parametrize(
    "value",
    ["deadbeef", "sha1=" + "0" * 64, "sha256=" + "0" * 63, "sha256=" + "g" * 64, "sha256="],
)
def test_malformed_signature_is_rejected(value: str) -> None:
    """A header without `sha256=` and 64 hex digits is rejected as malformed."""
    with pytest.raises(InjuryRejected, match="malformed"):
        verify(BODY, {SIGNATURE_HEADER: value}, KEY)


def test_tampered_body_is_rejected() -> None:
    """Changing the body after signing breaks the signature."""
    signature = sign(BODY, KEY)
    tampered = BODY.replace(b"core/x/", b"core/y/")
    with pytest.raises(InjuryRejected, match="does not match"):
        verify(tampered, {SIGNATURE_HEADER: signature}, KEY)


def test_wrong_key_is_rejected() -> None:
    """A signature made with another key is rejected."""
    with pytest.raises(InjuryRejected, match="does not match"):
        verify(BODY, {SIGNATURE_HEADER: sign(BODY, b"another-key")}, KEY)


def test_reserialised_body_is_rejected() -> None:
    """The signature covers the exact bytes: the same JSON re-serialised does not verify."""
    signature = sign(BODY, KEY)
    respaced = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert respaced != BODY
    with pytest.raises(InjuryRejected):
        verify(respaced, {SIGNATURE_HEADER: signature}, KEY)


def test_reason_never_leaks_key_or_expected_signature() -> None:
    """The rejection message names the problem, not the key or the expected value."""
    with pytest.raises(InjuryRejected) as info:
        verify(BODY, {SIGNATURE_HEADER: "sha256=" + "0" * 64}, KEY)
    message = str(info.value)
    assert KEY.decode() not in message
    assert sign(BODY, KEY).split("=", 1)[1] not in message


def test_empty_key_is_refused() -> None:
    """An empty key is a configuration mistake, not a key."""
    with pytest.raises(ValueError, match="empty"):
        sign(BODY, b"")


@given(body=st.binary(max_size=512), key=st.binary(min_size=1, max_size=64), flip=st.integers(0))
def test_roundtrip_and_any_bit_flip(body: bytes, key: bytes, flip: int) -> None:
    """Every signed body verifies; flipping any one bit of it makes it fail."""
    signature = sign(body, key)
    verify(body, {SIGNATURE_HEADER: signature}, key)
    if body:
        i = flip % (len(body) * 8)
        changed = bytearray(body)
        changed[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InjuryRejected):
            verify(bytes(changed), {SIGNATURE_HEADER: signature}, key)
