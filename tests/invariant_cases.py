"""Hand-written hostile messages for the invariant tests, each with the outcomes it may have.

A builder takes the rig (for a real directory to aim at, the signing key and the server's
max_payload) and returns the message. Where rejecting and healing are both defensible (a lone
surrogate, a number Python cannot hold), both are allowed; the invariants still apply.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from tests.conftest import injury
from tests.invariant_support import HEALED, REJECTED, Rig, Sent, header_bytes, signature

R = frozenset({REJECTED})
H = frozenset({HEALED})
H_OR_R = frozenset({HEALED, REJECTED})
SKIP_OR_R = frozenset({"injury_skipped", REJECTED})
ESC_OR_R = frozenset({"injury_escalated", REJECTED})
Builder = Callable[[Rig], Sent]


def dumps(doc: Any, *, ascii_only: bool = True) -> bytes:
    """JSON text; non-ASCII output keeps lone surrogates as (invalid) UTF-8 bytes."""
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def uid() -> str:
    return uuid.uuid4().hex


def fill(rig: Rig, headers: dict[str, str] | None, make: Callable[[int], bytes]) -> bytes:
    """A body `make(n)` grown to 64 bytes under the server's max_payload, headers included."""
    room = rig.max_payload - 64 - header_bytes(rig.sign(headers, b""))
    body = make(0)
    return make(room - len(body))


def sent(
    rig: Rig,
    label: str,
    body: bytes,
    expect: frozenset[str],
    *,
    headers: dict[str, str] | None = None,
    target: str | None = None,
    signed: bool = True,
) -> Sent:
    """A message, signed when the rig has a key (an unsigned one can only be rejected there)."""
    msg_id = (headers or {}).get("Nats-Msg-Id", "").strip() or None
    if signed:
        headers = rig.sign(headers, body)
    elif rig.key is not None:
        expect = R
    return Sent(label, body, headers, expect, msg_id, target)


def aimed(
    rig: Rig, label: str, expect: frozenset[str] = H_OR_R, with_id: bool = False, **extra: Any
) -> Sent:
    """A valid injury for a real directory, with extra fields added (and a Nats-Msg-Id)."""
    path = rig.take_dir()
    headers = {"Nats-Msg-Id": uid()} if with_id else None
    return sent(rig, label, dumps(injury(path, **extra)), expect, headers=headers, target=path)


def aimed_raw(rig: Rig, label: str, extra_json: str, expect: frozenset[str] = H_OR_R) -> Sent:
    """A valid injury for a real directory with raw JSON text spliced in as field `x`."""
    path = rig.take_dir()
    body = dumps(injury(path))[:-1] + b', "x": ' + extra_json.encode() + b"}"
    return sent(rig, label, body, expect, target=path)


def field(
    rig: Rig,
    label: str,
    expect: frozenset[str] = SKIP_OR_R,
    ascii_only: bool = True,
    with_id: bool = False,
    **fields: Any,
) -> Sent:
    """An injury for an absent path with some fields replaced (and a Nats-Msg-Id)."""
    doc = {**injury(f"zz/absent-{uid()}/"), **fields}
    headers = {"Nats-Msg-Id": uid()} if with_id else None
    return sent(rig, label, dumps(doc, ascii_only=ascii_only), expect, headers=headers)


def raw_injury(rig: Rig, label: str, text: str) -> Sent:
    """An injury for an absent path whose timestamp is raw JSON text (NaN, 1e999, ...)."""
    doc = injury(f"zz/absent-{uid()}/")
    data = dumps(doc).replace(json.dumps(doc["timestamp"]).encode(), text.encode(), 1)
    return sent(rig, label, data, R)


def near_limit_injury(rig: Rig, *, heals: bool) -> Sent:
    path = rig.take_dir() if heals else f"zz/absent-{uid()}/"
    doc = injury(path)

    def make(n: int) -> bytes:
        return dumps({**doc, "pad": "p" * max(0, n)})

    label = f"valid injury, max_payload-64 bytes, {'real dir' if heals else 'absent path'}"
    expect = H if heals else frozenset({"injury_skipped"})
    return sent(rig, label, fill(rig, None, make), expect, target=path if heals else None)


def with_id(rig: Rig, label: str, msg_id: str, expect: frozenset[str] = H) -> Sent:
    path = rig.take_dir()
    headers = {"Nats-Msg-Id": msg_id}
    # A signature covers the id: a blank or over-long (> 256) id cannot be signed, so refused.
    if rig.key is not None and ((msg_id and not msg_id.strip()) or len(msg_id) > 256):
        expect = R
    return sent(rig, label, dumps(injury(path)), expect, headers=headers, target=path)


def with_sig(rig: Rig, label: str, value: str | None, valid: bool = False) -> Sent:
    path = rig.take_dir()
    body = dumps(injury(path))
    headers: dict[str, str] | None = None
    if valid:  # the right HMAC, spelled in upper case
        signed_at, msg_id = f"{time.time():.3f}", f"upper-{path}"
        value = signature(body, rig.key or b"k", msg_id, signed_at).upper().replace("V2=", "v2=")
        headers = {"Nats-Msg-Id": msg_id, "Aura-Signed-At": signed_at}
    if value is not None:
        headers = {**(headers or {}), "Aura-Signature": value}
    expect = H if (rig.key is None or valid) else R
    return Sent(f"Aura-Signature {label}", body, headers, expect, None, path)


def _deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def body(rig: Rig, label: str, data: bytes, expect: frozenset[str] = R, **kw: Any) -> Sent:
    """A message with a fixed body."""
    return sent(rig, label, data, expect, **kw)


def near_limit(rig: Rig, label: str, make: Callable[[int], bytes], msg_id: bool = False) -> Sent:
    """A body of max_payload - 64 bytes (headers counted), which can only be rejected."""
    headers = {"Nats-Msg-Id": uid()} if msg_id else None
    return sent(rig, label, fill(rig, headers, make), R, headers=headers)


def dup_key_path(rig: Rig) -> Sent:
    """`affected_path` twice: a real file first, a real directory last."""
    path = rig.take_dir()
    data = dumps(injury("core/src/app.py"))[:-1] + f', "affected_path": "{path}"}}'.encode()
    return sent(rig, "affected_path twice", data, H_OR_R, target=path)


def many_headers(rig: Rig) -> Sent:
    path = rig.take_dir()
    headers = {f"X-Junk-{i}": "\u202e\u2028 \u2603 " * i for i in range(50)}
    return sent(rig, "50 junk headers", dumps(injury(path)), H, headers=headers, target=path)


NASTY: dict[str, Builder] = {
    # --- at the size limit
    "max-payload-binary": lambda r: body(
        r, "0xff * max_payload", b"\xff" * r.max_payload, signed=False
    ),
    "near-limit-text": partial(near_limit, label="text", make=lambda n: b"x" * n),
    "near-limit-text-msg-id": partial(
        near_limit, label="text, Nats-Msg-Id", make=lambda n: b"y" * n, msg_id=True
    ),
    "near-limit-json": partial(
        near_limit, label="JSON, not an injury", make=lambda n: dumps({"pad": "a" * n})
    ),
    "near-limit-injury-absent": partial(near_limit_injury, heals=False),
    "near-limit-injury-heals": partial(near_limit_injury, heals=True),
    # --- not an injury
    "empty": partial(body, label="empty body", data=b""),
    "json-null": partial(body, label="null", data=b"null"),
    "json-list": partial(body, label="a list of injuries", data=b"[" + dumps(injury("a/")) + b"]"),
    "json-string": partial(body, label="a JSON string", data=b'"\\udc80"'),
    "bare-nan": partial(body, label="NaN", data=b"NaN"),
    "bare-1e999": partial(body, label="1e999", data=b"1e999"),
    "deep-array": partial(body, label="arrays 100k deep", data=_deep_array(100_000).encode()),
    "deep-object": partial(
        body, label="objects 50k deep", data=('{"a":' * 50_000 + "1" + "}" * 50_000).encode()
    ),
    "utf8-surrogate-bytes": partial(
        field,
        label="surrogate as UTF-8 bytes",
        expect=R,
        ascii_only=False,
        affected_path="a/\udc80/",
    ),
    # --- numbers
    "timestamp-nan": partial(raw_injury, label="timestamp NaN", text="NaN"),
    "timestamp-infinity": partial(raw_injury, label="timestamp Infinity", text="Infinity"),
    "timestamp-1e999": partial(raw_injury, label="timestamp 1e999", text="1e999"),
    "timestamp-huge-int": partial(raw_injury, label="timestamp 10**400", text="1" + "0" * 400),
    "extra-neg-infinity": partial(
        aimed_raw, label="extra -Infinity", expect=R, extra_json="-Infinity"
    ),
    "extra-1e999": partial(aimed_raw, label="extra 1e999", extra_json="1e999"),
    "extra-int-4000-digits": partial(aimed_raw, label="extra 4000 digits", extra_json="9" * 4000),
    "extra-int-5000-digits": partial(aimed_raw, label="extra 5000 digits", extra_json="9" * 5000),
    "extra-deep-200": partial(aimed_raw, label="extra 200 deep", extra_json=_deep_array(200)),
    "extra-deep-900": partial(aimed_raw, label="extra 900 deep", extra_json=_deep_array(900)),
    # --- duplicate keys
    "dup-key-path": dup_key_path,
    "dup-key-severity": partial(
        body,
        label="severity twice, last bogus",
        data=dumps(injury("a/"))[:-1] + b', "severity": "bogus"}',
    ),
    # --- lone surrogates and other hostile strings in every field
    "surrogate-type": partial(field, label="injury_type \\udc80", expect=R, injury_type="a\udc80"),
    "surrogate-path": partial(field, label="affected_path \\udc80", affected_path="\udc80"),
    "surrogate-severity": partial(field, label="severity \\udc80", expect=R, severity="\udc80"),
    "surrogate-action": partial(
        field, label="recommended_action \\udc80", expect=ESC_OR_R, recommended_action="\udc80"
    ),
    "surrogate-extra-value": partial(aimed, label="extra value \\udc80", note="\udc80"),
    "surrogate-extra-key": partial(aimed, label="extra key \\ud800", **{"\ud800": 1}),
    "surrogate-path-msg-id": partial(
        field, label="affected_path \\udc80, Nats-Msg-Id", affected_path="a/\udc80", with_id=True
    ),
    "surrogate-action-msg-id": partial(
        field,
        label="recommended_action \\udc80, Nats-Msg-Id",
        expect=ESC_OR_R,
        recommended_action="\udc80",
        with_id=True,
    ),
    "surrogate-extra-value-msg-id": partial(
        aimed, label="extra value \\udc80, Nats-Msg-Id", note="\udc80", with_id=True
    ),
    "surrogate-extra-key-msg-id": partial(
        aimed, label="extra key \\udc80, Nats-Msg-Id", with_id=True, **{"\udc80": "\ud800"}
    ),
    "u2028-path": partial(
        field, label="affected_path U+2028", ascii_only=False, affected_path="a/\u2028b/"
    ),
    "rtl-path": partial(
        field, label="affected_path RTL", ascii_only=False, affected_path="a/\u202eb/"
    ),
    "nul-path": partial(field, label="affected_path NUL", expect=R, affected_path="a/\x00b/"),
    "nul-extra": partial(aimed, label="extra NUL", expect=H, note="a\x00b"),
    "unicode-extra": partial(
        aimed, label="extra U+2028 RTL", expect=H, note="\u2028\u202e\U0001f41d"
    ),
    "100kb-path": partial(
        field, label="affected_path 100 KB", expect=R, affected_path="a/" * 50_000
    ),
    "100kb-type": partial(field, label="injury_type 100 KB", expect=R, injury_type="t" * 100_000),
    "100kb-action": partial(
        field, label="recommended_action 100 KB", expect=R, recommended_action="x" * 100_000
    ),
    "100kb-extra": partial(aimed, label="extra 100 KB", expect=H, note="\u2028" * 100_000),
    "auto-heal-false": partial(
        aimed, label="auto_heal false", expect=frozenset({"injury_escalated"}), auto_heal=False
    ),
    # --- headers
    "msg-id-empty": partial(with_id, label="Nats-Msg-Id empty", msg_id=""),
    "msg-id-blank": partial(with_id, label="Nats-Msg-Id blank", msg_id="   "),
    "msg-id-10kb": lambda r: with_id(r, "Nats-Msg-Id 10 KB", "i" * 10_000 + uid()),
    "msg-id-unicode": lambda r: with_id(r, "Nats-Msg-Id unicode", "\u00f1\u2028\u202e" + uid()),
    "msg-id-subject-chars": lambda r: with_id(r, "Nats-Msg-Id a.b.*.>", "a.b.*.> " + uid()),
    "many-headers": many_headers,
    "signature-garbage": partial(with_sig, label="garbage", value="sha256=" + "zz" * 32),
    "signature-wrong": partial(with_sig, label="wrong HMAC", value="sha256=" + "0" * 64),
    "signature-unicode": partial(with_sig, label="unicode", value="sha256=\u202e\U0001f41d"),
    "signature-absent": partial(with_sig, label="absent", value=None),
    "signature-upper-case": partial(with_sig, label="upper case", value="", valid=True),
}
