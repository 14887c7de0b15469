"""What happened to an injury: every path through the auto-healer ends in an `Outcome`.

What follows from an outcome (settle, page, dead letter, event, exit status) is decided in one
place, `decision.decide()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import structlog

from auto_healer.contracts import ParsedInjury
from auto_healer.loglevel import enabled

log = structlog.get_logger("auto_healer.healer")


class Kind(StrEnum):
    """The five ends of an injury, plus `planned` for a dry-run heal and `held` for one an
    operator control (pause, breaker) keeps from healing for now."""

    HEALED = "healed"
    PLANNED = "planned"
    SKIPPED = "skipped"
    ESCALATED = "escalated"
    FAILED = "failed"
    REJECTED = "rejected"
    HELD = "held"


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
    store_unavailable: bool = False  # the coordination store did not answer: no heal was tried
    page_on_failure: bool = True  # the playbook's `on_failure: escalate`
    attempts: int = 0
    raw: bytes | None = None  # the body of a payload that never became an injury
    raw_id: str | None = None  # its id: the msg-id, or a hash of the body
    page_held: bool = False  # a held injury that carries its control's one page (breaker trip)
    # an approval request holds the injury (held for it, or escalated offering it): paged
    kept_aside: bool = False
    resolves: bool = False  # a skip that closes a paged problem (an approval rejected)
    # After a push, whether the remote head shows the heal (`verification`); None: nothing was
    # pushed. A heal it does not show is `failed` with `verified` False.
    verified: bool | None = None

    @property
    def injury_id(self) -> str | None:
        return self.injury.id if self.injury else self.raw_id

    @property
    def pushed(self) -> bool:
        """A heal commit reached the remote: healed, or failed only because the remote head
        does not show it (the breaker and the recurrence count both)."""
        unverified = self.kind is Kind.FAILED and self.verified is False
        return bool(self.commit) and (self.kind is Kind.HEALED or unverified)

    @property
    def files(self) -> tuple[FileChange, ...]:
        return tuple(f for step in self.steps for f in step.files)


def log_outcome(outcome: Outcome, *, dry_run: bool) -> None:
    """One line per injury's outcome: a dry-run plan or a skip is the bulk of a burst (debug);
    a change or a problem is said."""
    quiet = outcome.kind in (Kind.PLANNED, Kind.SKIPPED)
    if quiet and not enabled(logging.DEBUG):
        return
    bad = outcome.kind in (Kind.REJECTED, Kind.FAILED)
    (log.warning if bad else log.debug if quiet else log.info)(
        "injury_outcome",
        injury_id=outcome.injury_id,
        outcome=outcome.kind.value,
        reason=outcome.reason,
        playbook=outcome.playbook,
        commit=outcome.commit,
        dry_run=dry_run,
    )
