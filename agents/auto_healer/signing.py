"""Signed injuries (v2): an HMAC-SHA256 over the injury id, a timestamp and the exact body.

A publisher that holds the shared key (`INJURY_SIGNING_KEY`) sends three headers:

    Nats-Msg-Id:    <the injury id; no CR/LF, at most 256 characters>
    Aura-Signed-At: <unix seconds, decimal, e.g. 1735920000 (a fraction is allowed)>
    Aura-Signature: v2=<lower-case hex HMAC-SHA256(key, CANONICAL)>

    CANONICAL = b"aura-injury-v2\\n" + msg_id + b"\\n" + signed_at + b"\\n" + body

where `msg_id` (UTF-8) and `signed_at` (ASCII) are the header values exactly as sent, and `body`
is the message as sent (a re-serialised payload does not verify). Neither header value can
contain a newline, so the form is unambiguous. Any publisher reproduces it in three lines:

    signed_at = str(int(time.time()))
    msg = b"\\n".join([b"aura-injury-v2", msg_id.encode(), signed_at.encode(), body])
    signature = "v2=" + hmac.new(key, msg, hashlib.sha256).hexdigest()

The agent's `Verifier` rejects (`InjuryRejected`, outcome `rejected`, never healed) an injury
whose signature is missing, malformed or wrong, that lacks either header, that was signed more
than `max_age_s` ago or more than `max_skew_s` in the future, or whose id it already accepted
within that window (a replay). Legacy v1 signatures (`sha256=<HMAC(key, body)>`, body only, so
replayable) are rejected unless `accept_legacy` is set for a migration. Comparisons are
constant-time; neither the key nor an expected signature ever appears in a message or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

from auto_healer.contracts import MSG_ID_HEADER
from auto_healer.errors import InjuryRejected

if TYPE_CHECKING:
    from auto_healer.settings import Settings

log = structlog.get_logger()

SIGNATURE_HEADER = "Aura-Signature"
SIGNED_AT_HEADER = "Aura-Signed-At"
SCHEME = "v2"
LEGACY_SCHEME = "sha256"
CONTEXT = b"aura-injury-v2"
MAX_MSG_ID_CHARS = 256
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_SIGNED_NAMES = {n.lower() for n in (MSG_ID_HEADER, SIGNED_AT_HEADER, SIGNATURE_HEADER)}
_UPGRADE = (
    f"sign with v2 (headers {MSG_ID_HEADER}, {SIGNED_AT_HEADER} and {SIGNATURE_HEADER}: "
    f"{SCHEME}=..., see auto_healer.signing), or set SIGNATURE_ACCEPT_LEGACY=true on the agent "
    "while publishers migrate"
)


def _hmac(key: bytes, message: bytes) -> str:
    if not key:
        raise ValueError("the signing key must not be empty")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def mac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of `message` under `key`, lower-case hex: for other records signed with
    the same key (an approval decision, see `approvals`)."""
    return _hmac(key, message)


def mac_holds(key: bytes, message: bytes, given: str) -> bool:
    """Whether `given` is `mac(key, message)` (constant-time)."""
    return hmac.compare_digest(given.encode(errors="surrogateescape"), mac(key, message).encode())


def canonical(body: bytes, *, msg_id: str, signed_at: str) -> bytes:
    """The bytes a v2 signature covers (see the module docstring)."""
    if not msg_id or "\n" in msg_id or "\r" in msg_id:
        raise ValueError("the msg-id must be non-empty and contain no CR or LF")
    if not _UNIX_SECONDS.fullmatch(signed_at):
        raise ValueError("signed_at must be unix seconds in decimal")
    return b"\n".join([CONTEXT, msg_id.encode(), signed_at.encode(), body])


def sign(body: bytes, key: bytes, *, msg_id: str, signed_at: str) -> str:
    """The v2 `Aura-Signature` header value: `v2=<hex>`."""
    return f"{SCHEME}={_hmac(key, canonical(body, msg_id=msg_id, signed_at=signed_at))}"


def signature_holds(
    body: bytes, key: bytes, *, msg_id: str, signed_at: str, signature: str
) -> bool:
    """Whether `signature` is the v2 signature of `body` under `key` (constant-time; no age,
    skew or replay check: for a message kept since, e.g. a dead letter being replayed)."""
    return hmac.compare_digest(
        signature.encode(errors="surrogateescape"),
        sign(body, key, msg_id=msg_id, signed_at=signed_at).encode(),
    )


def sign_legacy(body: bytes, key: bytes) -> str:
    """The legacy v1 header value `sha256=<hex HMAC(key, body)>` (replayable; migration only)."""
    return f"{LEGACY_SCHEME}={_hmac(key, body)}"


def signed_headers(
    body: bytes,
    key: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    msg_id: str,
    now: float | None = None,
) -> dict[str, str]:
    """A copy of `headers` plus every header a v2-signed injury needs: `Nats-Msg-Id`,
    `Aura-Signed-At` (`now`, default the current time, in whole seconds) and `Aura-Signature`.
    """
    signed_at = str(int(time.time() if now is None else now))
    out = {k: v for k, v in (headers or {}).items() if k.lower() not in _SIGNED_NAMES}
    out[MSG_ID_HEADER] = msg_id
    out[SIGNED_AT_HEADER] = signed_at
    out[SIGNATURE_HEADER] = sign(body, key, msg_id=msg_id, signed_at=signed_at)
    return out


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header's stripped value, its name matched case-insensitively; `None` when absent or
    blank. Two names that differ only in case are refused: which one counts would be a guess."""
    wanted = name.lower()
    found = [v for k, v in (headers or {}).items() if k.lower() == wanted]
    if len(found) > 1:
        raise InjuryRejected(f"ambiguous headers: {name} is given {len(found)} times")
    value = found[0].strip() if found else ""
    return value or None


# A dead letter keeps the publisher's signature under these names, so that a replay can check
# the publisher signed exactly this body before the agent signs it again under a new id.
KEPT_HEADERS = {
    MSG_ID_HEADER: "Auto-Healer-Signed-Msg-Id",
    SIGNED_AT_HEADER: "Auto-Healer-Signed-At",
    SIGNATURE_HEADER: "Auto-Healer-Signature",
}


def kept_signature(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The publisher's signature headers renamed as a dead letter keeps them (none if unsigned)."""
    out: dict[str, str] = {}
    for name, kept in KEPT_HEADERS.items():
        try:
            value = _header(headers, name)
        except InjuryRejected:  # ambiguous: keep none of it, a replay will be refused
            return {}
        if value is not None:
            out[kept] = value
    return out


def resign_kept(body: bytes, key: bytes, kept: Mapping[str, str], *, msg_id: str) -> dict[str, str]:
    """Headers that sign `body` anew as `msg_id`, if the signature `kept` with it holds.

    Signing a message again vouches for it, so only a body its publisher signed with this key
    is signed: a forged, unsigned or cut (fitted) dead letter raises `InjuryRejected`.
    """
    found = {name: kept.get(k) for name, k in KEPT_HEADERS.items()}
    signature, signed_id, signed_at = (
        found[SIGNATURE_HEADER],
        found[MSG_ID_HEADER],
        found[SIGNED_AT_HEADER],
    )
    if not (signature and signed_id and signed_at) or not signature_holds(
        body, key, msg_id=signed_id, signed_at=signed_at, signature=signature
    ):
        raise InjuryRejected(
            "it carries no valid v2 signature from its publisher (unsigned, forged, or cut to "
            "fit), and replaying would sign it on their behalf: publish it again at its source"
        )
    return signed_headers(body, key, msg_id=msg_id)


class _AcceptedIds:
    """The ids accepted in the last `ttl_s` seconds, at most `max_ids` of them (oldest go first)."""

    def __init__(self, ttl_s: float, max_ids: int) -> None:
        self.ttl_s = ttl_s
        self.max_ids = max_ids
        self._at: OrderedDict[str, float] = OrderedDict()  # id -> accepted at, oldest first
        self._warned_full = False

    def __len__(self) -> int:
        return len(self._at)

    def accepted_at(self, msg_id: str, now: float) -> float | None:
        self._expire(now)
        return self._at.get(msg_id)

    def add(self, msg_id: str, now: float) -> None:
        self._at.pop(msg_id, None)
        self._at[msg_id] = now
        while len(self._at) > self.max_ids:
            self._at.popitem(last=False)
            if not self._warned_full:
                self._warned_full = True
                log.warning("replay_cache_full", max_ids=self.max_ids, ttl_s=self.ttl_s)

    def _expire(self, now: float) -> None:
        while self._at:
            oldest = next(iter(self._at.values()))
            if now - oldest <= self.ttl_s:
                return
            self._at.popitem(last=False)


class Verifier:
    """Checks v2 signatures, freshness and replays; build one at start-up and keep it."""

    def __init__(
        self,
        key: bytes,
        *,
        max_age_s: float = 300.0,
        max_skew_s: float = 30.0,
        accept_legacy: bool = False,
        clock: Callable[[], float] = time.time,
        max_ids: int = 100_000,
    ) -> None:
        if not key:
            raise ValueError("the signing key must not be empty")
        if max_age_s <= 0 or max_skew_s < 0 or max_ids < 1:
            raise ValueError("need max_age_s > 0, max_skew_s >= 0 and max_ids >= 1")
        self._key = key
        self.max_age_s = max_age_s
        self.max_skew_s = max_skew_s
        self.accept_legacy = accept_legacy
        self._clock = clock
        # a signed_at within the window is at most max_age_s + max_skew_s older than its
        # acceptance, so after that long a replay of the id is refused as too old anyway.
        self._accepted = _AcceptedIds(max_age_s + max_skew_s, max_ids)

    def __repr__(self) -> str:  # no key in tracebacks or debug output
        return f"Verifier(max_age_s={self.max_age_s}, max_skew_s={self.max_skew_s}, ...)"

    def verify(
        self, body: bytes, headers: Mapping[str, str] | None, *, redelivered: bool = False
    ) -> None:
        """Accept a correctly signed, fresh, first-seen injury, else raise `InjuryRejected`.

        `redelivered=True` (JetStream's own redelivery, `num_delivered > 1`, of a message
        already checked on its first delivery) skips the age limit and the replay check, so
        a heal retried after a transient failure is not refused; the signature still counts.
        """
        value = _header(headers, SIGNATURE_HEADER)
        if value is None:
            raise InjuryRejected(f"unsigned injury: the {SIGNATURE_HEADER} header is missing")
        scheme, sep, given = value.partition("=")
        scheme = scheme.strip().lower()
        if sep and scheme == LEGACY_SCHEME:
            self._verify_legacy(body, headers, given.strip())
            return
        if not sep or scheme != SCHEME or not _HEX_DIGEST.fullmatch(given.strip()):
            raise InjuryRejected(
                f"malformed {SIGNATURE_HEADER} header: expected '{SCHEME}=' and 64 hex digits"
            )
        msg_id = _header(headers, MSG_ID_HEADER)
        if msg_id is None:
            raise InjuryRejected(
                f"signed injury without a {MSG_ID_HEADER} header: the signature covers the id"
            )
        if len(msg_id) > MAX_MSG_ID_CHARS or "\n" in msg_id or "\r" in msg_id:
            raise InjuryRejected(
                f"malformed {MSG_ID_HEADER} header: a line break or over {MAX_MSG_ID_CHARS} chars"
            )
        signed_at = _header(headers, SIGNED_AT_HEADER)
        if signed_at is None:
            raise InjuryRejected(
                f"signed injury without an {SIGNED_AT_HEADER} header (unix seconds)"
            )
        if not _UNIX_SECONDS.fullmatch(signed_at):
            raise InjuryRejected(
                f"malformed {SIGNED_AT_HEADER} header: expected unix seconds in decimal"
            )
        expected = _hmac(self._key, canonical(body, msg_id=msg_id, signed_at=signed_at))
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
            raise InjuryRejected(
                f"bad injury signature: the {SIGNATURE_HEADER} does not match the payload, "
                f"{MSG_ID_HEADER} and {SIGNED_AT_HEADER}"
            )
        now = self._clock()
        self._check_fresh(float(signed_at), now, redelivered=redelivered)
        before = self._accepted.accepted_at(msg_id, now)
        if before is not None and not redelivered:
            raise InjuryRejected(
                f"replayed injury: id {msg_id!r} was already accepted {now - before:.0f}s ago"
            )
        self._accepted.add(msg_id, now)

    def _check_fresh(self, signed_at: float, now: float, *, redelivered: bool) -> None:
        age = now - signed_at
        if age > self.max_age_s and not redelivered:
            raise InjuryRejected(
                f"stale injury: signed {age:.0f}s ago, the limit is {self.max_age_s:g}s "
                "(SIGNATURE_MAX_AGE_S)"
            )
        if -age > self.max_skew_s:
            raise InjuryRejected(
                f"injury signed {-age:.0f}s in the future, beyond the allowed clock skew of "
                f"{self.max_skew_s:g}s (SIGNATURE_MAX_SKEW_S)"
            )

    def _verify_legacy(self, body: bytes, headers: Mapping[str, str] | None, given: str) -> None:
        if not self.accept_legacy:
            raise InjuryRejected(
                f"legacy {LEGACY_SCHEME}= signature refused: it covers only the body and can be "
                f"replayed; {_UPGRADE}"
            )
        if not _HEX_DIGEST.fullmatch(given):
            raise InjuryRejected(
                f"malformed {SIGNATURE_HEADER} header: expected '{LEGACY_SCHEME}=' and 64 hex "
                "digits"
            )
        if not hmac.compare_digest(_hmac(self._key, body).encode(), given.lower().encode()):
            raise InjuryRejected(
                f"bad injury signature: the legacy {SIGNATURE_HEADER} does not match the payload"
            )
        log.warning(
            "legacy_signature_accepted",
            msg_id=_header(headers, MSG_ID_HEADER),
            hint="replayable; " + _UPGRADE,
        )


def verifier_from_settings(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> Verifier | None:
    """The agent's `Verifier` from `INJURY_SIGNING_KEY` and the `SIGNATURE_*` settings, or
    `None` when no key is set (signatures are then not required)."""
    key = settings.injury_signing_key
    if key is None:
        return None
    return Verifier(
        key.get_secret_value().encode(),
        max_age_s=settings.signature_max_age_s,
        max_skew_s=settings.signature_max_skew_s,
        accept_legacy=settings.signature_accept_legacy,
        clock=clock,
    )
