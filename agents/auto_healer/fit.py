"""Making outgoing messages fit the connection's `max_payload`: truncated, never dropped.

NATS counts a message's header block (`NATS/1.0\\r\\n`, every `Key: value\\r\\n`, the closing
`\\r\\n`) plus its body against the server's `max_payload`; one byte over and the server closes
the connection, which nats-py does not reopen. Dead letters keep a prefix of their body and say
how large the whole was and its sha256; outcome events shed their largest parts (the embedded
injury first, then long strings and lists) until they fit, and stay valid JSON with the same
top-level keys.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

# Room kept under max_payload for what a client may add (nats-py adds headers for
# expected-stream or per-message TTL options), so a fitted message never meets the limit.
MARGIN = 512
VALUE_CAP = 1000
HEADER_ORIGINAL_SIZE = "Auto-Healer-Original-Size"
HEADER_ORIGINAL_SHA256 = "Auto-Healer-Original-Sha256"
HEADER_TRUNCATED = "Auto-Healer-Truncated"
INJURY_PREFIX = 4096
_STR_CAPS = (65536, 8192, 2048, 512, 128, 32, 0)
_LIST_CAPS = (4096, 512, 64, 16, 4, 1, 0)
_MAX_DEPTH = 32
_NATS_HDR_LINE = b"NATS/1.0\r\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_KEY_CHAR = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")


def budget(max_payload: int) -> int:
    """The bytes a message (headers and body) may use on a connection with this limit."""
    return max_payload - min(MARGIN, max_payload // 4)


def header_size(headers: dict[str, str] | None) -> int:
    """The bytes of the header block nats-py sends for `headers` (0 without headers)."""
    if headers is None:
        return 0
    return len(_NATS_HDR_LINE) + 2 + sum(len(_line(k, v)) for k, v in headers.items())


def wire_size(body: bytes, headers: dict[str, str] | None) -> int:
    """What the server counts against max_payload: the header block plus the body."""
    return header_size(headers) + len(body)


def safe_header_value(value: str, cap: int = VALUE_CAP) -> str:
    """A header value NATS carries as it is: no control characters (CR/LF would end the
    header line), valid UTF-8 (lone surrogates become U+FFFD), trimmed and at most `cap` chars."""
    value = _CONTROL.sub(" ", _unpair(value)).strip()
    if len(value) <= cap:
        return value
    return value[:cap] if cap < 8 else value[: cap - 3].rstrip() + "..."


def safe_header_key(key: str) -> str:
    """A header name NATS accepts (RFC 7230 token characters); others become `-`."""
    return _BAD_KEY_CHAR.sub("-", key.strip()) or "X"


def fit_dead_letter(
    body: bytes, headers: dict[str, str], max_payload: int
) -> tuple[bytes, dict[str, str]]:
    """The body and headers to publish so they fit `max_payload`, headers sanitised.

    A body too large keeps its prefix and gains `Auto-Healer-Original-Size`,
    `Auto-Healer-Original-Sha256` (of the whole body) and `Auto-Healer-Truncated: true`.
    """
    room = budget(max_payload)
    fitted = {safe_header_key(k): safe_header_value(v) for k, v in headers.items()}
    if wire_size(body, fitted) <= room:
        return body, fitted
    fitted[HEADER_ORIGINAL_SIZE] = str(len(body))
    fitted[HEADER_ORIGINAL_SHA256] = hashlib.sha256(body).hexdigest()
    fitted[HEADER_TRUNCATED] = "true"
    ours = (HEADER_ORIGINAL_SIZE, HEADER_ORIGINAL_SHA256, HEADER_TRUNCATED)
    cap = VALUE_CAP
    # Headers never take more than half the room: the body keeps at least the other half.
    while header_size(fitted) > room // 2 and cap > 0:
        cap //= 2
        fitted = {k: v if k in ours else safe_header_value(v, cap) for k, v in fitted.items()}
    return body[: max(0, room - header_size(fitted))], fitted


def fit_event(doc: dict[str, Any], max_payload: int, *, dumped: bytes | None = None) -> bytes:
    """The JSON of an outcome event, fitted to `max_payload` (published without headers).

    Too large, the embedded injury (`metadata.injury`) becomes `{"truncated": true,
    "original_size": n, "sha256": ..., "prefix": ...}` (of its JSON), then every string and
    list is capped ever shorter, and last `metadata` itself is summarised the same way. The
    top-level keys stay; lone surrogates are escaped (`\\udxxx`), so any string serialises.
    Sizes and digests are of the part's compact JSON (`json.dumps(part, separators=(",", ":"))`).
    `dumped` is `event_json(doc)` when the caller has it already.
    """
    room = budget(max_payload)
    data = event_json(doc) if dumped is None else dumped
    if data and len(data) <= room:
        return data
    shrunk = dict(doc)
    metadata = shrunk.get("metadata")
    if isinstance(metadata, dict) and metadata.get("injury") is not None:
        shrunk["metadata"] = {**metadata, "injury": _summary(metadata["injury"], INJURY_PREFIX)}
    for last_resort in (False, True):
        if last_resort and "metadata" in doc:
            shrunk["metadata"] = _summary(doc["metadata"], INJURY_PREFIX)
        for str_cap, list_cap in zip(_STR_CAPS, _LIST_CAPS, strict=True):
            data = _dumps(_cap(shrunk, str_cap, list_cap, 0))
            if len(data) <= room:
                return data
    return _dumps({k: None for k in doc})  # unreachable above a few hundred bytes of room


def _line(key: str, value: str) -> bytes:
    # As nats-py writes it: the key and the value trimmed, CR/LF in the value made spaces.
    value = value.strip().replace("\r", " ").replace("\n", " ")
    return key.strip().encode() + b": " + value.encode("utf-8", "surrogatepass") + b"\r\n"


def _unpair(value: str) -> str:
    """Lone surrogates (which UTF-8 cannot encode) replaced by U+FFFD."""
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def event_json(doc: Any) -> bytes:
    """The compact JSON of a whole event, b"" if JSON cannot hold it (circular, absurdly deep).

    orjson writes it (non-ASCII as UTF-8, not escaped); what orjson refuses (a lone surrogate,
    a non-string key, a 65-bit integer, deep nesting) is written by the standard library, with
    lone surrogates escaped as ever."""
    try:
        return orjson.dumps(doc, default=str, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        try:
            return _dumps(doc)
        except (ValueError, RecursionError):
            return b""


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=True, default=str, separators=(",", ":")).encode()


def _summary(value: Any, prefix: int) -> dict[str, Any]:
    """What is kept of a part that was cut out: its size, its digest and a prefix of its JSON."""
    try:
        data = _dumps(value)
    except (ValueError, RecursionError):  # circular or absurdly deep
        data = f"<{type(value).__name__} that JSON cannot hold>".encode()
    return {
        "truncated": True,
        "original_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "prefix": data[:prefix].decode(errors="replace"),
    }


def _cap(value: Any, str_cap: int, list_cap: int, depth: int) -> Any:
    """A copy of `value` with strings and lists cut to the caps; keys of dicts all kept."""
    if isinstance(value, str):
        if len(value) <= str_cap:
            return value
        return value[:str_cap] + f"… [truncated, {len(value)} chars]"
    if depth >= _MAX_DEPTH and isinstance(value, dict | list | tuple):
        return _summary(value, str_cap)
    if isinstance(value, dict):
        return {k: _cap(v, str_cap, list_cap, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        kept = [_cap(v, str_cap, list_cap, depth + 1) for v in value[:list_cap]]
        if len(value) > list_cap:
            kept.append(f"… [truncated, {len(value)} items]")
        return kept
    return value
