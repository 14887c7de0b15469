"""A decision, carried out: the page, the dead letter, the outcome event and the settling of
the message, in that order. Nothing here decides; `decision` did."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from auto_healer.bloodstream import DEAD_LETTER_SUBJECT, Publisher
from auto_healer.contracts import event_subject
from auto_healer.decision import Decision, PageAction, Settle, settle_together
from auto_healer.metrics import Metrics
from auto_healer.outcomes import Outcome
from auto_healer.pager import Pager, PageResult
from auto_healer.report import outcome_dict
from auto_healer.signing import kept_signature
from auto_healer.sources import NO_SETTLE, Delivery

log = structlog.get_logger("auto_healer.effects")


@dataclass(frozen=True)
class Done:
    """What was actually done for one outcome (the event reports this, not the intention)."""

    page: PageResult
    dead_lettered: bool | None  # None: no dead letter was due
    settle: Settle
    announced: bool


# What was done for a decision that waits on no one (no page, no dead letter), by settlement
_DONE_NOW = {s: Done(PageResult.NONE, None, s, Decision.announce(s)) for s in Settle}


class Effects:
    """Carries out decisions for the agent: one call per delivery, one settlement each."""

    def __init__(
        self, publisher: Publisher, pager: Pager | None, metrics: Metrics, *, js: Any, repo: str
    ) -> None:
        self.publisher, self.pager, self.metrics = publisher, pager, metrics
        self.js, self.repo = js, repo

    async def carry_out(self, outcome: Outcome, delivery: Delivery, decision: Decision) -> Done:
        """Page, dead-letter, announce, then settle the delivery exactly once."""
        done = await self._follow(outcome, delivery, decision)
        await self._settle(delivery, done.settle, decision.nak_delay_s)
        return done

    def waits(self, decision: Decision) -> bool:
        """Whether carrying out `decision` waits on someone (a page, a dead letter)."""
        return decision.dead_letter or (
            decision.page is not PageAction.NONE and self.pager is not None
        )

    async def carry_out_now(self, batch: list[tuple[Outcome, Delivery, Decision]]) -> None:
        """Decisions that wait on no one (see `waits`), for a batch: every event back to back,
        then every settlement (nothing yields between them, so the connection writes them out
        in one go)."""
        settles = []
        for outcome, _delivery, decision in batch:
            settle = decision.final(paged=True, dead_lettered=True)
            done = _DONE_NOW[settle]
            if done.announced:
                await self.publisher.publish_event(
                    event_subject(decision.event_type), self._event(outcome, decision, done)
                )
            settles.append(settle)
        for (_outcome, delivery, decision), settle in zip(batch, settles, strict=True):
            if delivery.settler is not NO_SETTLE:  # core NATS: nothing to settle
                await self._settle(delivery, settle, decision.nak_delay_s)

    async def carry_out_all(
        self, outcomes: list[Outcome], delivery: Delivery, decisions: list[Decision]
    ) -> list[Done]:
        """An envelope: each injury's page, dead letter and event, then one settlement."""
        done = [
            await self._follow(o, delivery, d) for o, d in zip(outcomes, decisions, strict=True)
        ]
        settle = settle_together([d.settle for d in done])
        await self._settle(delivery, settle, max(d.nak_delay_s for d in decisions))
        return done

    async def _follow(self, outcome: Outcome, delivery: Delivery, decision: Decision) -> Done:
        """Everything but the settlement: the page, the dead letter and the event."""
        page = PageResult.NONE
        if decision.page is not PageAction.NONE and self.pager is not None:
            page = await self.pager.notify(
                outcome, decision.page, repo=self.repo, durable=decision.page_durable
            )
            self.metrics.pages.labels(delivery=page.value).inc()
        dead_lettered: bool | None = None
        if decision.dead_letter:
            dead_lettered = await self._dead_letter(outcome, delivery)
        settle = decision.final(
            paged=page is not PageResult.UNDELIVERED, dead_lettered=dead_lettered is not False
        )
        announced = decision.announce(settle)
        done = Done(page, dead_lettered, settle, announced)
        if announced:
            await self.publisher.publish_event(
                event_subject(decision.event_type), self._event(outcome, decision, done)
            )
        return done

    async def _settle(self, delivery: Delivery, settle: Settle, nak_delay_s: float) -> None:
        try:
            if settle is Settle.ACK:
                await delivery.settler.ack()
            elif settle is Settle.TERM:
                await delivery.settler.term()
            else:
                await delivery.settler.nak(nak_delay_s)
        except Exception as exc:  # the server forgot it or the connection is gone: redelivered
            log.warning("settle_failed", settle=settle.value, error=str(exc) or type(exc).__name__)

    async def _dead_letter(self, outcome: Outcome, delivery: Delivery) -> bool:
        headers = {
            "Auto-Healer-Reason": outcome.reason,  # made header-safe and capped by `fit`
            "Auto-Healer-Outcome": outcome.kind.value,
            "Auto-Healer-Subject": delivery.subject,
        }
        if outcome.injury_id:
            headers["Auto-Healer-Injury-Id"] = outcome.injury_id
        headers.update(kept_signature(delivery.headers))
        return await self.publisher.publish_dead_letter(
            DEAD_LETTER_SUBJECT, delivery.data, headers, js=self.js
        )

    def _event(self, outcome: Outcome, decision: Decision, done: Done) -> dict[str, Any]:
        metadata = outcome_dict(outcome)
        metadata["repo"] = self.repo
        metadata["escalation"] = decision.page.value
        metadata["page"] = done.page.value
        metadata["dead_lettered"] = bool(done.dead_lettered)
        metadata["settle"] = done.settle.value
        # `DomainEvent(...).model_dump(exclude_none=True)` without validating and copying what
        # is ours already: the same keys, the same values (no session token).
        return {
            "success": decision.success,
            "event_type": decision.event_type,
            "timestamp": time.time(),
            "metadata": metadata,
        }
