"""Outcome events and heartbeats on the wire, in the encoding `EVENT_ENCODING` names.

`json` (the default) is the reference document's domain-event dict; `aura-proto` is the real
Hive's `aura.core.v1.Event` protobuf (`proto/aura/core/v1/event.proto`), which its newer
subscribers on `aura.hive.events.>` parse. Every message says which in its `Content-Type`
header. Either way the message is first fitted by `fit.fit_event`, so it stays under the
connection's `max_payload`. `decode` reads both back into a dict (for `auto-healer tail`).
"""

from __future__ import annotations

import json
import math
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, TypeGuard

from google.protobuf import json_format, unknown_fields
from google.protobuf.message import DecodeError

from auto_healer.contracts import SUBJECT_HEARTBEAT
from auto_healer.fit import budget, event_json, fit_event, header_size
from auto_healer.proto.aura.core.v1 import event_pb2 as pb

Encoding = Literal["json", "aura-proto"]
CONTENT_TYPE = "Content-Type"
JSON_TYPE = "application/json"
PROTO_TYPE = "application/x-protobuf; messageType=aura.core.v1.Event"
SERVICE = "auto-healer"
LOGGER_NAME = "auto_healer"
ALERT_EVENTS = frozenset({"injury_heal_failed", "injury_escalated", "injury_rejected"})
SEVERITIES = {
    "critical": pb.SEVERITY_CRITICAL,
    "high": pb.SEVERITY_ERROR,
    "medium": pb.SEVERITY_WARNING,
    "low": pb.SEVERITY_INFO,
}
SUMMARY_CAP = 500  # characters of an alert's or log line's message
ID_CAP = 256  # a longer injury id is not used as the Event's identifier
_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last second a Timestamp holds


class Wire(NamedTuple):
    """A message ready for NATS: its body, its headers, and whether parts were cut to fit.
    (A named tuple: made once per event, where a frozen dataclass costs four `setattr`s.)"""

    data: bytes
    headers: dict[str, str]
    cut: bool
    size: int = -1  # what the server counts (`fit.wire_size`), when known


def content_type(encoding: Encoding) -> str:
    """The `Content-Type` header value of a message in `encoding`."""
    return PROTO_TYPE if encoding == "aura-proto" else JSON_TYPE


_LABEL: dict[Encoding, dict[str, str]] = {
    "json": {CONTENT_TYPE: JSON_TYPE},
    "aura-proto": {CONTENT_TYPE: PROTO_TYPE},
}  # the headers of a message with no others (copied before they leave `encode`)
_LABEL_SIZE = {encoding: header_size(label) for encoding, label in _LABEL.items()}


def encode(
    subject: str,
    doc: Mapping[str, Any],
    *,
    encoding: Encoding,
    max_payload: int,
    headers: Mapping[str, str] | None = None,
) -> Wire:
    """`doc` (an outcome event or heartbeat dict) as the body to publish on `subject`, with
    `headers` plus `Content-Type`; headers and body stay within `fit.budget(max_payload)`.

    The dict is fitted as JSON first; a protobuf larger than its budget is fitted again with
    less room until it fits (at worst the Event keeps no metadata).
    """
    sent = {**headers, CONTENT_TYPE: content_type(encoding)} if headers else _LABEL[encoding]
    room = budget(max_payload)
    head = header_size(sent) if headers else _LABEL_SIZE[encoding]
    limit = max_payload - head
    whole = event_json(doc)
    full = len(whole) if whole else -1
    if encoding == "json" and 0 < full <= budget(limit) and head + full <= room:
        return Wire(whole, dict(sent), cut=False, size=head + full)  # the common case, unfitted
    while limit > 0:
        fitted = fit_event(dict(doc), limit, dumped=whole)
        data = fitted
        if encoding == "aura-proto":
            data = _event(subject, doc, json.loads(fitted)).SerializeToString()
        if (size := head + len(data)) <= room:
            return Wire(data, dict(sent), cut=len(fitted) < full or full < 0, size=size)
        # a Struct may be several times its JSON (a number takes 11 bytes): shrink in proportion
        limit = min(limit - limit // 8 - 1, limit * room // size)
    sent = dict(sent)
    if encoding == "aura-proto":
        return Wire(_event(subject, doc, {}).SerializeToString(), sent, cut=True)
    return Wire(fit_event(dict(doc), 0), sent, cut=True)


def to_event(subject: str, doc: Mapping[str, Any]) -> pb.Event:
    """The `aura.core.v1.Event` of an outcome event or a heartbeat dict, nothing cut."""
    return _event(subject, doc, json.loads(fit_event(dict(doc), 2**62)))


def decode(data: bytes, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A message in either encoding as a dict (an Event as protobuf's JSON mapping, field
    names as in the .proto): by its `Content-Type`, else JSON first, then an Event.

    Raises `ValueError` when the body is neither a JSON object nor an Event.
    """
    kind = next((v for k, v in (headers or {}).items() if k.lower() == "content-type"), "")
    kind = kind.split(";")[0].strip().lower()
    if kind == JSON_TYPE:
        return _from_json(data)
    if kind == PROTO_TYPE.split(";")[0]:
        return _from_proto(data, strict=False)
    try:
        return _from_json(data)
    except ValueError:
        return _from_proto(data, strict=True)


def _event(subject: str, doc: Mapping[str, Any], fitted: Mapping[str, Any]) -> pb.Event:
    """The Event of `doc` with the (fitted, plain JSON) `fitted` copy as its metadata."""
    event = pb.Event(identifier=_identifier(subject, doc), topic=subject)
    stamp = doc.get("timestamp")
    if _epoch(stamp):
        # seconds and fraction apart: `stamp * 1e9` would lose the microseconds to the double
        whole = math.floor(stamp)
        event.timestamp.seconds = whole
        event.timestamp.nanos = min(999_999_999, round((stamp - whole) * 1_000_000_000))
    metadata = fitted.get("metadata")
    top = {k: v for k, v in fitted.items() if k not in ("metadata", "timestamp")}
    event.metadata.update(_struct_safe({**(metadata if isinstance(metadata, dict) else {}), **top}))
    if subject == SUBJECT_HEARTBEAT:
        event.heartbeat.service = SERVICE
        event.heartbeat.instance_id = f"{socket.gethostname()}-{os.getpid()}"
        stopping = doc.get("status") == "stopping"
        event.heartbeat.status = pb.STATUS_DEGRADED if stopping else pb.STATUS_OK
    elif doc.get("event_type") in ALERT_EVENTS:
        severity = _injury(doc).get("severity")
        event.alert.severity = SEVERITIES.get(str(severity).lower(), pb.SEVERITY_WARNING)
        event.alert.message = _summary(doc)
        event.alert.source = SERVICE
    else:
        event.log.level = "info"
        event.log.message = _summary(doc)
        event.log.logger_name = LOGGER_NAME
    return event


def _identifier(subject: str, doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    injury_id = metadata.get("injury_id") if isinstance(metadata, dict) else None
    if subject != SUBJECT_HEARTBEAT and isinstance(injury_id, str) and 0 < len(injury_id) <= ID_CAP:
        return _unpair(injury_id)
    return str(uuid.uuid4())


def _epoch(stamp: Any) -> TypeGuard[float]:
    """Whether `stamp` is a Unix time a Timestamp can hold (else the Event has none)."""
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return False
    return math.isfinite(stamp) and 0 <= stamp <= _MAX_SECONDS


def _injury(doc: Mapping[str, Any]) -> dict[str, Any]:
    metadata = doc.get("metadata")
    injury = metadata.get("injury") if isinstance(metadata, dict) else None
    return injury if isinstance(injury, dict) else {}


def _summary(doc: Mapping[str, Any]) -> str:
    """One line: event type, injury type and path, and the reason; at most SUMMARY_CAP chars."""
    injury = _injury(doc)
    metadata = doc.get("metadata")
    reason = metadata.get("reason") if isinstance(metadata, dict) else None
    head = " ".join(
        str(part)
        for part in (doc.get("event_type"), injury.get("injury_type"), injury.get("affected_path"))
        if part
    )
    text = " ".join(f"{head}: {reason}".split()) if reason else " ".join(head.split())
    if len(text) > SUMMARY_CAP:
        text = text[: SUMMARY_CAP - 1] + "…"
    return _unpair(text)


def _struct_safe(value: Any) -> Any:
    """A plain JSON value a Struct can hold and protobuf can serialise: lone surrogates become
    U+FFFD (strings must be UTF-8), NaN and infinities become strings (JSON has no such number).
    """
    if isinstance(value, str):
        return _unpair(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_unpair(str(k)): _struct_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_struct_safe(v) for v in value]
    return value


def _unpair(value: str) -> str:
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def json_size(doc: Mapping[str, Any]) -> int:
    """The size of `doc` as compact JSON (`fit.event_json`), unfitted (-1 if JSON cannot hold
    it: circular or absurdly deep; fit_event cuts it)."""
    whole = event_json(doc)
    return len(whole) if whole else -1


def _from_json(data: bytes) -> dict[str, Any]:
    value = json.loads(data)  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__}, not an object")
    return value


def _from_proto(data: bytes, *, strict: bool) -> dict[str, Any]:
    """An Event's JSON mapping; `strict` (no Content-Type said it is one) also wants a topic or
    a payload and no unknown fields, since many byte strings parse as some protobuf."""
    try:
        event = pb.Event.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"neither JSON nor an aura.core.v1.Event: {exc}") from None
    if strict and (
        len(unknown_fields.UnknownFieldSet(event))
        or not (event.topic or event.WhichOneof("payload"))
    ):
        raise ValueError("neither JSON nor an aura.core.v1.Event")
    return json_format.MessageToDict(event, preserving_proto_field_name=True)
