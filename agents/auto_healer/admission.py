"""The edge: a delivery becomes verified, parsed injuries, or rejections with their reasons.

Signatures are checked and the contract is parsed here, once; the healer only ever sees a
`ParsedInjury`. A message is one injury, or bee-keeper's batch envelope of several (see
`envelope`). A rejection carries an id for the logs and the dead letter: the publisher's
`Nats-Msg-Id`, else a hash of the exact body (plus `:<index>` for an envelope's entry).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from auto_healer.contracts import (
    SUBJECT_EVENTS_PREFIX,
    ParsedInjury,
    decode_body,
    parse_injury_obj,
)
from auto_healer.envelope import is_envelope, split
from auto_healer.errors import InjuryRejected
from auto_healer.sources import Delivery


class Verifier(Protocol):
    """Checks a message's signature; raises `InjuryRejected` when it does not hold."""

    def verify(
        self, body: bytes, headers: Mapping[str, str] | None, *, redelivered: bool = False
    ) -> None: ...


@dataclass(frozen=True)
class Rejection:
    """A delivery, or an envelope's entry, that never became an injury."""

    injury_id: str
    reason: str


Admitted = ParsedInjury | Rejection


def body_id(delivery: Delivery) -> str:
    """The id of a message that may not be an injury at all."""
    return delivery.msg_id or "sha256-" + hashlib.sha256(delivery.data).hexdigest()[:24]


class Gate:
    """Admits deliveries: the signature first (when a key is set), then the contract."""

    def __init__(self, verifier: Verifier | None = None) -> None:
        self.verifier = verifier

    def admit(self, delivery: Delivery) -> list[Admitted]:
        """The injuries of one message, in order: one, or one per envelope entry."""
        if delivery.subject.startswith(SUBJECT_EVENTS_PREFIX + "."):  # the Hive's alerts
            return [self._alert(delivery)]
        try:
            if self.verifier is not None:
                # A redelivery of a message admitted once is not a replay, nor stale.
                redelivered = delivery.attempt > 1
                self.verifier.verify(delivery.data, delivery.headers, redelivered=redelivered)
            doc = decode_body(delivery.data)
            if is_envelope(doc):
                entries = split(doc, body_id(delivery), received_at=delivery.received_at)
                return [_admitted(entry_id, got) for entry_id, got in entries]
            parsed = parse_injury_obj(doc, delivery.headers, received_at=delivery.received_at)
        except InjuryRejected as exc:
            return [Rejection(body_id(delivery), str(exc))]
        return [parsed]

    @staticmethod
    def _alert(delivery: Delivery) -> Admitted:
        """An alert is the Hive's own (signed its way, not ours): escalated, never healed."""
        from auto_healer.alerts import alert_injury  # protobuf: only for the Hive's alerts

        ident = body_id(delivery)
        try:
            return alert_injury(
                delivery.data, delivery.headers, received_at=delivery.received_at, fallback_id=ident
            )
        except InjuryRejected as exc:
            return Rejection(ident, str(exc))


def _admitted(entry_id: str, got: ParsedInjury | InjuryRejected) -> Admitted:
    if isinstance(got, ParsedInjury):
        return got
    return Rejection(entry_id, str(got))
