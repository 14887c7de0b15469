"""What happened to an injury, and the one place that decides what follows from it.

Every path through the auto-healer ends in an `Outcome`. `consequence()` maps it to the
acknowledgement (ack, nak, term), the page (trigger, resolve, none), the bloodstream event and
the exit status. Nothing else in the package makes those decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from auto_healer.contracts import ParsedInjury


class Kind(StrEnum):
    """The five ends of an injury, plus `planned` for a dry-run heal."""

    HEALED = "healed"
    PLANNED = "planned"
    SKIPPED = "skipped"
    ESCALATED = "escalated"
    FAILED = "failed"
    REJECTED = "rejected"


class Settle(StrEnum):
    """How a JetStream message is settled (core NATS has nothing to settle)."""

    ACK = "ack"
    NAK = "nak"
    TERM = "term"


class PageAction(StrEnum):
    """What the pager is told."""

    NONE = "none"
    TRIGGER = "trigger"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class FileChange:
    """One file a heal deletes or rewrites, for plans and reports."""

    path: str
    change: str  # "delete" | "modify"


@dataclass(frozen=True)
class StepReport:
    """What one playbook step did or would do."""

    action: str
    summary: str
    files: tuple[FileChange, ...] = ()
    diff: str = ""


@dataclass(frozen=True)
class Outcome:
    """The end of one injury: its kind, the reason, and what was (or would be) done."""

    kind: Kind
    reason: str
    injury: ParsedInjury | None = None
    playbook: str | None = None
    steps: tuple[StepReport, ...] = ()
    commit: str | None = None
    branch: str | None = None
    commit_message: str | None = None
    dry_run: bool = False
    retryable: bool = False
    page_on_failure: bool = True  # the playbook's `on_failure: escalate`
    attempts: int = 0
    raw: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def injury_id(self) -> str | None:
        return self.injury.id if self.injury else None

    @property
    def files(self) -> tuple[FileChange, ...]:
        return tuple(f for step in self.steps for f in step.files)


@dataclass(frozen=True)
class Consequence:
    """What follows from an outcome."""

    settle: Settle
    page: PageAction
    event_type: str
    dead_letter: bool
    ok: bool  # counts as success for the one-shot exit status
    success: bool  # the `success` flag of the outcome event


_EVENTS = {
    Kind.HEALED: "injury_healed",
    Kind.PLANNED: "injury_heal_planned",
    Kind.SKIPPED: "injury_skipped",
    Kind.ESCALATED: "injury_escalated",
    Kind.FAILED: "injury_heal_failed",
    Kind.REJECTED: "injury_rejected",
}


def consequence(
    outcome: Outcome, *, can_redeliver: bool = False, out_of_deliveries: bool = False
) -> Consequence:
    """Decide ack/nak/term, page, event and exit status for an outcome.

    `can_redeliver` is true only in JetStream mode while deliveries remain: a transient failure
    is then nak'd and retried later instead of paged now. On the last delivery
    (`out_of_deliveries`) it is paged and dead-lettered.
    """
    kind = outcome.kind
    event = _EVENTS[kind]
    good = kind in (Kind.HEALED, Kind.PLANNED, Kind.SKIPPED)
    if kind is Kind.HEALED:
        return Consequence(Settle.ACK, PageAction.RESOLVE, event, False, ok=True, success=good)
    if kind in (Kind.PLANNED, Kind.SKIPPED):
        return Consequence(Settle.ACK, PageAction.NONE, event, False, ok=True, success=good)
    if kind is Kind.ESCALATED:
        return Consequence(Settle.ACK, PageAction.TRIGGER, event, False, ok=True, success=good)
    if kind is Kind.FAILED:
        if outcome.retryable and can_redeliver:
            return Consequence(Settle.NAK, PageAction.NONE, event, False, ok=False, success=good)
        page = PageAction.TRIGGER if outcome.page_on_failure else PageAction.NONE
        exhausted = outcome.retryable and out_of_deliveries
        return Consequence(Settle.ACK, page, event, exhausted, ok=False, success=good)
    # REJECTED: invalid or unsafe. A payload that never became an injury has nobody to page
    # about, only a dead letter; a valid injury refused for safety is paged as well.
    page = PageAction.TRIGGER if outcome.injury is not None else PageAction.NONE
    return Consequence(Settle.TERM, page, event, True, ok=False, success=good)


def page_durably(c: Consequence, *, can_redeliver: bool) -> bool:
    """Whether a page that cannot be delivered now goes to the durable outbox.

    Only a trigger may wait for a redelivery of its message (JetStream); a resolve never holds a
    heal back, and without redelivery (core NATS) the outbox is the only way not to lose it.
    """
    return not can_redeliver or c.page is not PageAction.TRIGGER


def settlement(
    c: Consequence, *, can_redeliver: bool, page_delivered: bool = True, dead_lettered: bool = True
) -> Settle:
    """The final fate of the message once its page and dead letter were tried.

    What could not be kept yet (a trigger the pager refused for now, a dead letter not written)
    brings the message back while it can come back; after that the outbox holds the page and
    the log the failure.
    """
    if can_redeliver and not (page_delivered and dead_lettered):
        return Settle.NAK
    return c.settle


def announce(settle: Settle) -> bool:
    """An outcome is announced on the bloodstream once, when it is final (not when nak'd)."""
    return settle is not Settle.NAK


def exit_ok(consequences: list[Consequence], *, pages_refused: int) -> bool:
    """The one-shot's exit status: every outcome fine, and no page refused or stranded."""
    return all(c.ok for c in consequences) and pages_refused == 0


def nak_delay_s(deliveries: int, *, base_s: float = 5.0, max_s: float = 300.0) -> float:
    """Back off redeliveries: 5 s, 10 s, 20 s ... up to five minutes."""
    return float(min(max_s, base_s * 2 ** max(0, deliveries - 1)))
