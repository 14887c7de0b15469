"""The edge: a delivery becomes a verified, parsed injury, or a rejection with its reason.

Signatures are checked and the contract is parsed here, once; the healer only ever sees a
`ParsedInjury`. A rejection carries an id for the logs and the dead letter: the publisher's
`Nats-Msg-Id`, else a hash of the exact body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from auto_healer.contracts import ParsedInjury, parse_injury
from auto_healer.errors import InjuryRejected
from auto_healer.sources import Delivery


class Verifier(Protocol):
    """Checks a message's signature; raises `InjuryRejected` when it does not hold."""

    def verify(
        self, body: bytes, headers: Mapping[str, str] | None, *, redelivered: bool = False
    ) -> None: ...


@dataclass(frozen=True)
class Rejection:
    """A delivery that never became an injury."""

    injury_id: str
    reason: str


def body_id(delivery: Delivery) -> str:
    """The id of a message that may not be an injury at all."""
    return delivery.msg_id or "sha256-" + hashlib.sha256(delivery.data).hexdigest()[:24]


class Gate:
    """Admits deliveries: the signature first (when a key is set), then the contract."""

    def __init__(self, verifier: Verifier | None = None) -> None:
        self.verifier = verifier

    def admit(self, delivery: Delivery) -> ParsedInjury | Rejection:
        try:
            if self.verifier is not None:
                # A redelivery of a message admitted once is not a replay, nor stale.
                redelivered = delivery.attempt > 1
                self.verifier.verify(delivery.data, delivery.headers, redelivered=redelivered)
            return parse_injury(delivery.data, delivery.headers)
        except InjuryRejected as exc:
            return Rejection(body_id(delivery), str(exc))
