"""The bloodstream contract: NATS subjects and the payloads that travel on them.

Mirrors `shared/reference/nats-bloodstream-events.md`. Publishers evolve, so unknown extra
fields are kept; a missing or wrong-typed field is rejected with a message that names it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from auto_healer.errors import InjuryRejected
from auto_healer.jsontext import canonical_json, loads
from auto_healer.paths import normalise

SUBJECT_AUDIT = "aura.hive.audit"
SUBJECT_INJURY = "aura.hive.injury"
SUBJECT_EVENTS_PREFIX = "aura.hive.events"
SUBJECT_HEARTBEAT = "aura.hive.heartbeat"
SUBJECT_BRAIN_DEAD = "aura.core.brain_dead"
MSG_ID_HEADER = "Nats-Msg-Id"
MAX_PAYLOAD_BYTES = 1024 * 1024


@lru_cache(maxsize=256)  # one per event type: the same few, for every outcome
def event_subject(event_type: str) -> str:
    """The subject of a domain event, `aura.hive.events.<event_type>`."""
    if not event_type or any(c in event_type for c in ".*> \t"):
        raise ValueError(f"event_type {event_type!r} is not a single subject token")
    return f"{SUBJECT_EVENTS_PREFIX}.{event_type}"


class Severity(StrEnum):
    """How bad an injury is, as bee-keeper reports it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


_SEVERITIES = frozenset(s.value for s in Severity)


class _Contract(BaseModel):
    """Base of every payload: extra fields are kept, declared ones are strictly typed."""

    # Validators are built on first use, not at import: a command uses only a few models.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, defer_build=True)


def _finite(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite, non-negative Unix time")
    return value


FREE_TEXT = "free_text"  # the injury_type of a free-text injury from the real bee-keeper
ALERT = "alert"  # the injury_type of an alert of the Hive taken in as an injury
TEXT_TYPES = frozenset({FREE_TEXT, ALERT})  # injuries that are a text, not a path
EPOCH_FLOOR_S = 1e9  # 2001-09-09: a smaller timestamp is some other clock (a monotonic one)


class Injury(_Contract):
    """`aura.hive.injury`: a self-healing trigger from bee-keeper."""

    timestamp: float
    injury_type: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    affected_path: str = Field(min_length=1, max_length=4096)
    severity: Severity
    recommended_action: str = Field(max_length=200)
    auto_heal: bool
    description: str | None = Field(default=None, max_length=20_000)  # free text, if any
    source: str | None = Field(default=None, max_length=200)  # the publishing agent

    @property
    def epoch_timestamp(self) -> float | None:
        """The timestamp when it is plausibly Unix time; None for another clock's reading."""
        return self.timestamp if self.timestamp >= EPOCH_FLOOR_S else None

    _finite_ts = field_validator("timestamp")(_finite)

    @field_validator("severity", mode="before")
    @classmethod
    def _severity_from_json(cls, value: Any) -> Any:
        # Strict mode accepts only enum instances; JSON gives strings. The isinstance check keeps
        # an unhashable value (a list) from escaping as a TypeError instead of a field error.
        if isinstance(value, Severity):
            return value
        if isinstance(value, str) and value in _SEVERITIES:
            return Severity(value)
        raise ValueError(f"must be one of {', '.join(s.value for s in Severity)}")

    @field_validator("affected_path")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain a NUL byte")
        return value


class Violation(_Contract):
    """One finding of an architectural audit."""

    severity: str
    file: str
    rule: str
    message: str


class AuditReport(_Contract):
    """`aura.hive.audit`: the result of one bee-keeper audit."""

    timestamp: float
    violations: list[Violation]
    repo: str
    commit_sha: str
    audit_status: str


class DomainEvent(_Contract):
    """`aura.hive.events.<event_type>`: a domain event; the auto-healer's outcomes use it."""

    success: bool
    event_type: str
    timestamp: float
    session_token: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def subject(self) -> str:
        return event_subject(self.event_type)


class Heartbeat(_Contract):
    """`aura.hive.heartbeat`: periodic liveness of one service."""

    status: Literal["active", "stopping"]
    timestamp: float
    service: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class BrainDead(_Contract):
    """`aura.core.brain_dead`: a catastrophic LLM failure in core."""

    timestamp: float
    error: str
    context: dict[str, Any] = Field(default_factory=dict)
    fallback_action: str | None = None
    fallback_price: float | None = None


SUBJECT_MODELS: dict[str, type[_Contract]] = {
    SUBJECT_AUDIT: AuditReport,
    SUBJECT_INJURY: Injury,
    SUBJECT_HEARTBEAT: Heartbeat,
    SUBJECT_BRAIN_DEAD: BrainDead,
}


def model_for_subject(subject: str) -> type[_Contract] | None:
    """The payload model of a bloodstream subject, or None for subjects outside the contract."""
    if subject.startswith(SUBJECT_EVENTS_PREFIX + "."):
        return DomainEvent
    return SUBJECT_MODELS.get(subject)


MSG_ID_MAX_CHARS = 200


def msg_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The publisher's `Nats-Msg-Id`, its name matched in any letter case (as the signature
    check does), so a replay cannot change the id by spelling the header differently.

    An id that is too long or holds control characters (it becomes a log field and a commit
    trailer) is replaced by a hash of itself: still stable, never raw.
    """
    if not headers:
        return None
    found = [v for k, v in headers.items() if k.lower() == MSG_ID_HEADER.lower()]
    exact = headers.get(MSG_ID_HEADER)
    raw = (exact if exact is not None else found[0] if found else "").strip()
    if not raw:
        return None
    if len(raw) <= MSG_ID_MAX_CHARS and raw.isprintable():
        return raw
    return "msgid-sha256-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def injury_id(payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> str:
    """The stable id of an injury: its `Nats-Msg-Id`, else a hash of the canonical payload."""
    msg_id = msg_id_of(headers)
    if msg_id:
        return msg_id
    return "sha256-" + hashlib.sha256(canonical_json(dict(payload))).hexdigest()[:24]


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line, human reason that names every offending field."""
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"field '{field}': {err['msg'].lower()}")
    return "; ".join(parts)


class ParsedInjury(BaseModel):
    """An injury that passed the contract, with its stable id and the raw payload it came from."""

    model_config = ConfigDict(frozen=True)

    id: str
    injury: Injury
    raw: dict[str, Any]
    path: str | None = None  # `affected_path` in normal form, once; None when its shape is unsafe
    path_error: str | None = None  # why it is unsafe (the healer refuses such an injury)
    received_at: float | None = None  # when the transport had it (for payloads of other clocks)

    @property
    def problem(self) -> str:
        """What identifies the problem beside its type: the normal path, or for free text a
        hash of the text (two different texts are two problems)."""
        inj = self.injury
        if inj.injury_type in TEXT_TYPES and inj.description is not None:
            text = inj.description.encode("utf-8", "surrogatepass")
            return "text:" + hashlib.sha256(text).hexdigest()[:16]
        return self.path if self.path is not None else inj.affected_path.strip("/")

    @property
    def when(self) -> float:
        """The injury's time for humans: its own if it is Unix time, else when it arrived."""
        epoch = self.injury.epoch_timestamp
        if epoch is not None:
            return epoch
        return self.received_at if self.received_at is not None else time.time()


_PARSED_FIELDS = frozenset({"id", "injury", "raw", "path", "path_error", "received_at"})


def parse_injury_obj(
    payload: Any, headers: Mapping[str, str] | None = None, *, received_at: float | None = None
) -> ParsedInjury:
    """Validate one decoded JSON value as an injury, or raise `InjuryRejected` naming the field."""
    if not isinstance(payload, dict):
        raise InjuryRejected(f"payload must be a JSON object, got {type(payload).__name__}")
    try:
        injury = Injury.model_validate(payload)
    except ValidationError as exc:
        raise InjuryRejected(f"invalid injury: {describe_validation_error(exc)}") from None
    try:
        parsed_id = injury_id(payload, headers)
    except (TypeError, ValueError, RecursionError) as exc:  # NaN, bytes, absurd nesting
        raise InjuryRejected(f"payload is not canonical JSON: {exc}") from None
    try:
        path, path_error = normalise(injury.affected_path), None
    except InjuryRejected as exc:
        path, path_error = None, str(exc)
    # Every field is ours and already of its type: no second validation (it would copy `raw`).
    return ParsedInjury.model_construct(
        set(_PARSED_FIELDS),
        id=parsed_id,
        injury=injury,
        raw=payload,
        path=path,
        path_error=path_error,
        received_at=received_at,
    )


def decode_body(data: bytes) -> Any:
    """A message body as strict JSON, within the size limit, or `InjuryRejected` saying why."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InjuryRejected(f"payload is {len(data)} bytes, over the {MAX_PAYLOAD_BYTES} limit")
    try:
        return loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InjuryRejected(f"payload is not valid JSON: {exc}") from None


def parse_injury(data: bytes, headers: Mapping[str, str] | None = None) -> ParsedInjury:
    """Decode and validate an injury message body as it arrives from NATS."""
    return parse_injury_obj(decode_body(data), headers)
