"""The one decision: what an outcome means for its message, the pager, the dead letters, the
bloodstream and the exit status.

`decide()` is pure: from an `Outcome` and the `Context` of its delivery (redeliverable, last
attempt, heal attempts spent, dry-run, pager configured) it returns a `Decision`. `Effects`
carries a decision out and re-decides nothing: the only choice left to it, whether everything
it was told to keep (a page, a dead letter) was kept, is answered by `Decision.final()`, also
here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from auto_healer.outcomes import Kind, Outcome
from auto_healer.retry import RetryPolicy


class Settle(StrEnum):
    """How a message is settled (a transport with nothing to settle ignores it)."""

    ACK = "ack"
    NAK = "nak"
    TERM = "term"


class PageAction(StrEnum):
    """What the pager is told."""

    NONE = "none"
    TRIGGER = "trigger"
    RESOLVE = "resolve"


EVENT_TYPES = {
    Kind.HEALED: "injury_healed",
    Kind.PLANNED: "injury_heal_planned",
    Kind.SKIPPED: "injury_skipped",
    Kind.ESCALATED: "injury_escalated",
    Kind.FAILED: "injury_heal_failed",
    Kind.REJECTED: "injury_rejected",
    Kind.HELD: "injury_held",
}
NAK_BACKOFF = RetryPolicy(backoff_s=5.0, max_backoff_s=300.0)  # the transport redelivers
OUTAGE_NAK_S = 3.0  # a coordination outage: back soon (a leader election takes seconds)


@dataclass(frozen=True)
class Context:
    """What the decision needs to know about the delivery and the agent."""

    redeliverable: bool = False  # a nak brings the message back for another attempt
    last_attempt: bool = False  # the last delivery within the budget (the transport's count)
    attempt: int = 1
    # Failed heal attempts of this injury counted so far, this one included: set when the
    # transport redelivers without limit and the agent keeps its own budget, which then
    # replaces `last_attempt` for a failed heal. None: not counted.
    heal_attempts: int | None = None
    heal_budget: int = 0
    dry_run: bool = False
    pager: bool = False  # a pager is configured


@dataclass(frozen=True)
class Decision:
    """Everything that follows from one outcome."""

    event_type: str
    success: bool  # the `success` flag of the outcome event
    ok: bool  # counts as success for the one-shot's exit status
    page: PageAction  # what the pager is told (NONE without a pager)
    page_durable: bool  # a page the pager cannot take now goes to the outbox
    dead_letter: bool
    settle: Settle  # once every effect was carried out
    retry_if_incomplete: bool  # a page or dead letter not kept brings the message back
    nak_delay_s: float

    def final(self, *, paged: bool, dead_lettered: bool) -> Settle:
        """The settlement once the page and dead letter were tried.

        What could not be kept yet (a trigger the pager refused for now, a dead letter not
        written) brings the message back while it can come back; after that the outbox holds
        the page and the log the failure.
        """
        if self.retry_if_incomplete and not (paged and dead_lettered):
            return Settle.NAK
        return self.settle

    @staticmethod
    def announce(settle: Settle) -> bool:
        """An outcome is announced once, when it is final: never when its message comes back."""
        return settle is not Settle.NAK


def nak_delay_s(attempt: int) -> float:
    """Back off redeliveries: 5 s, 10 s, 20 s ... up to five minutes."""
    return NAK_BACKOFF.delay_s(attempt)


def decide(outcome: Outcome, ctx: Context) -> Decision:
    """Decide settle, page, dead letter, event and exit status for one outcome.

    A transient failure is nak'd while its budget lasts (JetStream) instead of paged now; once
    spent it is paged and dead-lettered. The budget counts heal attempts when they are counted
    (`heal_attempts`), else deliveries. A coordination outage is no heal attempt: it is nak'd
    for a short delay whenever the message can come back, whatever the budget says. A dry-run
    never naks, terminates or dead-letters: its private consumer keeps nothing, and it writes
    nothing shared. A heal pushed but not shown by the remote head (`verified` False) failed: it
    is paged and acked, never brought back; so is an injury kept aside for approval.
    """
    kind = outcome.kind
    redeliverable = ctx.redeliverable and not ctx.dry_run
    page, settle, dead_letter = PageAction.NONE, Settle.ACK, False
    outage = kind is Kind.FAILED and outcome.store_unavailable
    counted = ctx.heal_attempts
    spent = ctx.last_attempt if counted is None else counted >= ctx.heal_budget
    # Pushed, but the remote head does not show the heal: a human must look, whatever
    # `on_failure` says, and the message never comes back (a second push would meet the same
    # cause), so the page is kept by the outbox if the pager cannot take it now.
    unverified = kind is Kind.FAILED and outcome.verified is False
    # Kept aside, an approval request holds the injury (held for approval, or escalated with
    # the offer to approve it): its message is done with and never brought back (a redelivery
    # would find the request and page nothing), so its page is kept by the outbox.
    comes_back = redeliverable and not spent and not unverified and not outcome.kept_aside
    if kind is Kind.HEALED or (kind is Kind.SKIPPED and outcome.resolves):
        page = PageAction.RESOLVE
    elif kind is Kind.ESCALATED or unverified:
        page = PageAction.TRIGGER
    elif kind is Kind.FAILED:
        if outcome.retryable and redeliverable and (outage or not spent):
            settle = Settle.NAK
        else:
            page = PageAction.TRIGGER if outcome.page_on_failure else PageAction.NONE
            dead_letter = outcome.retryable and (spent or ctx.last_attempt)
    elif kind is Kind.REJECTED:
        # A payload that never became an injury has nobody to page about, only a dead letter;
        # a valid injury refused for safety is paged as well.
        page = PageAction.TRIGGER if outcome.injury is not None else PageAction.NONE
        settle, dead_letter = Settle.TERM, True
    elif kind is Kind.HELD:
        # Held (paused, breaker open): back into the stream while it can come back, paged only
        # by the one that carries its control's page. Core NATS cannot hold it, nor can the last
        # delivery: it is escalated with the reason (and the last delivery dead-lettered). One
        # kept aside (awaiting approval) is paged and its message settled.
        if outcome.kept_aside:  # an approval request holds it: the message is done with
            page = PageAction.TRIGGER
        elif redeliverable:
            settle = Settle.NAK
            page = PageAction.TRIGGER if outcome.page_held else PageAction.NONE
        else:
            page = PageAction.TRIGGER
            dead_letter = ctx.last_attempt
    if not ctx.pager:
        page = PageAction.NONE
    if ctx.dry_run:
        settle, dead_letter = Settle.ACK, False
    return Decision(
        event_type=EVENT_TYPES[kind],
        success=kind in (Kind.HEALED, Kind.PLANNED, Kind.SKIPPED),
        ok=kind in (Kind.HEALED, Kind.PLANNED, Kind.SKIPPED, Kind.ESCALATED, Kind.HELD),
        page=page,
        # a held injury's page comes back with no redelivery: the outbox must keep it
        page_durable=not comes_back or page is not PageAction.TRIGGER or kind is Kind.HELD,
        dead_letter=dead_letter,
        settle=settle,
        retry_if_incomplete=comes_back,
        nak_delay_s=OUTAGE_NAK_S if outage else nak_delay_s(ctx.heal_attempts or ctx.attempt),
    )


def settle_together(settles: list[Settle]) -> Settle:
    """One message that carried several injuries (an envelope) is settled once: brought back
    if any of them must come back, terminated only if every one was refused, else acked."""
    if Settle.NAK in settles:
        return Settle.NAK
    if settles and all(s is Settle.TERM for s in settles):
        return Settle.TERM
    return Settle.ACK


def exit_ok(decisions: list[Decision], *, pages_refused: int) -> bool:
    """The one-shot's exit status: every outcome fine, and no page refused or stranded."""
    return all(d.ok for d in decisions) and pages_refused == 0
