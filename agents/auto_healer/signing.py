"""Signed injuries: an HMAC-SHA256 of the exact message body, carried in a NATS header.

A publisher that holds the shared key (`INJURY_SIGNING_KEY`) adds the header

    Aura-Signature: sha256=<lower-case hex HMAC-SHA256(key, body)>

When the agent has a key configured, every injury must carry a valid signature: a missing,
malformed or mismatching one raises `InjuryRejected` (outcome `rejected`, never healed). The
signature covers the bytes as sent, so a re-serialised payload does not verify. The comparison
is constant-time, and neither the key nor the expected signature ever appears in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from auto_healer.errors import InjuryRejected

SIGNATURE_HEADER = "Aura-Signature"
SCHEME = "sha256"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _digest(body: bytes, key: bytes) -> str:
    if not key:
        raise ValueError("the signing key must not be empty")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign(body: bytes, key: bytes) -> str:
    """The `Aura-Signature` header value for a message body: `sha256=<hex>`."""
    return f"{SCHEME}={_digest(body, key)}"


def signed_headers(
    body: bytes, key: bytes, headers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A copy of `headers` (or a new dict) with the `Aura-Signature` of `body` added."""
    out = dict(headers or {})
    out[SIGNATURE_HEADER] = sign(body, key)
    return out


def _header(headers: Mapping[str, str] | None) -> str | None:
    """The signature header, looked up case-insensitively (HTTP-style header names)."""
    if not headers:
        return None
    if SIGNATURE_HEADER in headers:
        return headers[SIGNATURE_HEADER]
    wanted = SIGNATURE_HEADER.lower()
    for name, value in headers.items():
        if name.lower() == wanted:
            return value
    return None


def verify(body: bytes, headers: Mapping[str, str] | None, key: bytes) -> None:
    """Accept a body whose `Aura-Signature` header is its HMAC under `key`, else reject it.

    Raises `InjuryRejected` saying whether the signature is missing, malformed or does not
    match; the reason never contains the key or the expected value.
    """
    value = _header(headers)
    if value is None or not value.strip():
        raise InjuryRejected(f"unsigned injury: the {SIGNATURE_HEADER} header is missing")
    scheme, sep, given = value.strip().partition("=")
    if not sep or scheme.lower() != SCHEME or not _HEX_DIGEST.fullmatch(given.lower()):
        raise InjuryRejected(
            f"malformed {SIGNATURE_HEADER} header: expected '{SCHEME}=' and 64 hex digits"
        )
    expected = _digest(body, key)
    if not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise InjuryRejected(
            f"bad injury signature: the {SIGNATURE_HEADER} does not match the payload"
        )
