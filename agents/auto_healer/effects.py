"""What follows an outcome, carried out: the page, the dead letter, the outcome event and the
settling of the message, in that order, as `outcomes` decides them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from auto_healer.bloodstream import DEAD_LETTER_SUBJECT, Publisher
from auto_healer.contracts import DomainEvent, event_subject
from auto_healer.metrics import Metrics
from auto_healer.outcomes import (
    Outcome,
    PageAction,
    Settle,
    announce,
    consequence,
    nak_delay_s,
    page_durably,
    settlement,
)
from auto_healer.pager import Pager, PageResult
from auto_healer.report import outcome_dict


class Effects:
    """Carries out the consequence of each outcome for the agent."""

    def __init__(
        self,
        publisher: Publisher,
        pager: Pager | None,
        metrics: Metrics,
        *,
        js: Any,
        repo_key: str,
        dry_run: bool,
    ) -> None:
        self.publisher, self.pager, self.metrics = publisher, pager, metrics
        self.js, self.repo_key, self.dry_run = js, repo_key, dry_run

    async def carry_out(
        self,
        outcome: Outcome,
        data: bytes,
        headers: Mapping[str, str] | None,
        msg: Any,
        deliveries: int,
        *,
        max_deliver: int,
    ) -> None:
        """Carry out what `outcomes` decided: page, dead letter, event, then ack/nak/term."""
        redeliverable = msg is not None and deliveries < max_deliver
        c = consequence(
            outcome,
            can_redeliver=redeliverable,
            out_of_deliveries=msg is not None and not redeliverable,
        )
        delivered = True
        if c.page is not PageAction.NONE and self.pager is not None:
            delivery = await self.pager.notify(
                outcome,
                c.page,
                repo=self.repo_key,
                durable=page_durably(c, can_redeliver=redeliverable),
            )
            self.metrics.pages.labels(delivery=delivery.value).inc()
            delivered = delivery is not PageResult.UNDELIVERED
        dead_lettered = True
        if c.dead_letter and not self.dry_run:
            dead_lettered = await self._dead_letter(outcome, data, headers)
        settle = settlement(
            c, can_redeliver=redeliverable, page_delivered=delivered, dead_lettered=dead_lettered
        )
        if announce(settle):
            await self.publisher.publish(
                event_subject(c.event_type), self._event(outcome, c.event_type, c.success)
            )
        if msg is None:
            return
        if settle is Settle.ACK or self.dry_run:  # a dry-run's private consumer keeps nothing
            await msg.ack()
        elif settle is Settle.TERM:
            await msg.term()
        else:
            await msg.nak(delay=nak_delay_s(deliveries))

    async def _dead_letter(
        self, outcome: Outcome, data: bytes, headers: Mapping[str, str] | None
    ) -> bool:
        dl_headers = {
            "Auto-Healer-Reason": outcome.reason[:1000].replace("\n", " "),
            "Auto-Healer-Outcome": outcome.kind.value,
        }
        if headers and headers.get("Nats-Msg-Id"):
            dl_headers["Auto-Healer-Injury-Id"] = headers["Nats-Msg-Id"]
        return await self.publisher.publish(DEAD_LETTER_SUBJECT, data, dl_headers, js=self.js)

    def _event(self, outcome: Outcome, event_type: str, success: bool) -> dict[str, Any]:
        metadata = outcome_dict(outcome)
        metadata["repo"] = self.repo_key
        event = DomainEvent(
            success=success, event_type=event_type, timestamp=time.time(), metadata=metadata
        )
        return event.model_dump(exclude_none=True)
