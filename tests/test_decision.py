"""The decision table: every kind of outcome in every delivery context, written out by hand."""
# ruff: noqa: E501  (the decision table reads best one row a line)

from __future__ import annotations

import pytest
from auto_healer.contracts import parse_injury_obj
from auto_healer.decision import (
    Context,
    PageAction,
    Settle,
    decide,
    exit_ok,
    nak_delay_s,
)
from auto_healer.outcomes import Kind, Outcome

INJURY = parse_injury_obj(
    {
        "timestamp": 1735920000.0,
        "injury_type": "unauthorized_directory",
        "affected_path": "core/src/x/",
        "severity": "high",
        "recommended_action": "delete_directory",
        "auto_heal": True,
    }
)
A, N, T = Settle.ACK, Settle.NAK, Settle.TERM
TRIG, RES, NO = PageAction.TRIGGER, PageAction.RESOLVE, PageAction.NONE

# (kind, retryable, page_on_failure, injury?, redeliverable, last_attempt)
#   -> (settle, page, page_durable, dead_letter, retry_if_incomplete, event, success, ok)
TABLE = [
    # A healed injury resolves its incident and is acked, wherever it came from.
    ((Kind.HEALED, False, True, True, True, False), (A, RES, True, False, True, "injury_healed", True, True)),
    ((Kind.HEALED, False, True, True, False, False), (A, RES, True, False, False, "injury_healed", True, True)),
    ((Kind.HEALED, False, True, True, False, True), (A, RES, True, False, False, "injury_healed", True, True)),
    ((Kind.PLANNED, False, True, True, True, False), (A, NO, True, False, True, "injury_heal_planned", True, True)),
    ((Kind.SKIPPED, False, True, True, True, False), (A, NO, True, False, True, "injury_skipped", True, True)),
    ((Kind.SKIPPED, False, True, True, False, True), (A, NO, True, False, False, "injury_skipped", True, True)),
    # Escalation pages; a trigger that cannot be delivered waits for redelivery (not durable).
    ((Kind.ESCALATED, False, True, True, True, False), (A, TRIG, False, False, True, "injury_escalated", False, True)),
    ((Kind.ESCALATED, False, True, True, False, True), (A, TRIG, True, False, False, "injury_escalated", False, True)),
    ((Kind.ESCALATED, False, True, True, False, False), (A, TRIG, True, False, False, "injury_escalated", False, True)),
    # A transient failure comes back while it can; on the last delivery: paged + dead-lettered.
    ((Kind.FAILED, True, True, True, True, False), (N, NO, True, False, True, "injury_heal_failed", False, False)),
    ((Kind.FAILED, True, True, True, False, True), (A, TRIG, True, True, False, "injury_heal_failed", False, False)),
    ((Kind.FAILED, True, True, True, False, False), (A, TRIG, True, False, False, "injury_heal_failed", False, False)),
    ((Kind.FAILED, True, False, True, False, True), (A, NO, True, True, False, "injury_heal_failed", False, False)),
    ((Kind.FAILED, True, False, True, True, False), (N, NO, True, False, True, "injury_heal_failed", False, False)),
    # A permanent failure is paged at once (unless the playbook says report) and acked.
    ((Kind.FAILED, False, True, True, True, False), (A, TRIG, False, False, True, "injury_heal_failed", False, False)),
    ((Kind.FAILED, False, True, True, False, True), (A, TRIG, True, False, False, "injury_heal_failed", False, False)),
    ((Kind.FAILED, False, False, True, True, False), (A, NO, True, False, True, "injury_heal_failed", False, False)),
    # Rejected: terminated and dead-lettered; paged only when there is an injury to page about.
    ((Kind.REJECTED, False, True, True, True, False), (T, TRIG, False, True, True, "injury_rejected", False, False)),
    ((Kind.REJECTED, False, True, False, True, False), (T, NO, True, True, True, "injury_rejected", False, False)),
    ((Kind.REJECTED, False, True, False, False, True), (T, NO, True, True, False, "injury_rejected", False, False)),
    ((Kind.REJECTED, False, True, False, False, False), (T, NO, True, True, False, "injury_rejected", False, False)),
    # Held (paused, breaker open): back into the stream, quietly; what cannot come back (core
    # NATS, the last delivery) is escalated with the reason, the last delivery dead-lettered.
    ((Kind.HELD, False, True, True, True, False), (N, NO, True, False, True, "injury_held", False, True)),
    ((Kind.HELD, False, True, True, False, True), (A, TRIG, True, True, False, "injury_held", False, True)),
    ((Kind.HELD, False, True, True, False, False), (A, TRIG, True, False, False, "injury_held", False, True)),
]  # fmt: skip


def _outcome(kind: Kind, retryable: bool, page_on_failure: bool, injury: bool) -> Outcome:
    return Outcome(
        kind,
        "why",
        injury=INJURY if injury else None,
        retryable=retryable,
        page_on_failure=page_on_failure,
        raw=None if injury else b"{",
    )


@pytest.mark.parametrize(("given", "expected"), TABLE)
def test_decision_table(given: tuple[object, ...], expected: tuple[object, ...]) -> None:
    """Each row of the table is exactly what decide() returns (pager on, not a dry-run)."""
    kind, retryable, on_failure, injury, redeliverable, last = given
    outcome = _outcome(kind, retryable, on_failure, injury)  # type: ignore[arg-type]
    ctx = Context(redeliverable=redeliverable, last_attempt=last, attempt=3, pager=True)  # type: ignore[arg-type]
    d = decide(outcome, ctx)
    got = (
        d.settle,
        d.page,
        d.page_durable,
        d.dead_letter,
        d.retry_if_incomplete,
        d.event_type,
        d.success,
        d.ok,
    )
    assert got == expected
    assert d.nak_delay_s == 20.0


@pytest.mark.parametrize(("given", "expected"), TABLE)
def test_dry_run_never_naks_terms_or_dead_letters(
    given: tuple[object, ...], expected: tuple[object, ...]
) -> None:
    """A dry-run acks everything, writes no dead letter, and its pages stay durable plans."""
    kind, retryable, on_failure, injury, redeliverable, last = given
    outcome = _outcome(kind, retryable, on_failure, injury)  # type: ignore[arg-type]
    ctx = Context(redeliverable=redeliverable, last_attempt=last, dry_run=True, pager=True)  # type: ignore[arg-type]
    d = decide(outcome, ctx)
    assert (d.settle, d.dead_letter, d.retry_if_incomplete, d.page_durable) == (
        A,
        False,
        False,
        True,
    )
    assert d.event_type == expected[5]
    assert d.final(paged=False, dead_lettered=False) is A


@pytest.mark.parametrize(("given", "expected"), TABLE)
def test_without_a_pager_nothing_is_paged(
    given: tuple[object, ...], expected: tuple[object, ...]
) -> None:
    """With no pager configured the page is NONE; everything else is as in the table."""
    kind, retryable, on_failure, injury, redeliverable, last = given
    outcome = _outcome(kind, retryable, on_failure, injury)  # type: ignore[arg-type]
    d = decide(outcome, Context(redeliverable=redeliverable, last_attempt=last, pager=False))  # type: ignore[arg-type]
    assert d.page is NO
    assert (d.settle, d.dead_letter, d.ok) == (expected[0], expected[3], expected[7])


@pytest.mark.parametrize(
    ("settle", "retry", "paged", "dead_lettered", "final"),
    [
        (A, True, True, True, A),
        (A, True, False, True, N),
        (A, True, True, False, N),
        (T, True, True, False, N),
        (T, True, False, False, N),
        (A, False, False, True, A),
        (T, False, True, False, T),
        (N, True, True, True, N),
        (N, False, True, True, N),
    ],
)
def test_final_settlement(
    settle: Settle, retry: bool, paged: bool, dead_lettered: bool, final: Settle
) -> None:
    """What could not be kept brings the message back only while it can come back."""
    escalated = Outcome(Kind.ESCALATED, "x", injury=INJURY)
    d = decide(escalated, Context(redeliverable=retry, pager=True))
    d = type(d)(**{**d.__dict__, "settle": settle})
    assert d.final(paged=paged, dead_lettered=dead_lettered) is final
    assert d.announce(final) is (final is not N)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0), (7, 300.0), (50, 300.0)],
)
def test_nak_delay_grows_and_is_capped(attempt: int, delay: float) -> None:
    """Redeliveries back off 5 s, 10 s, 20 s ... up to five minutes."""
    assert nak_delay_s(attempt) == delay


def test_exit_status_needs_every_outcome_fine_and_no_page_refused() -> None:
    """The one-shot exits 0 only when every decision is ok and no page was refused."""
    ctx = Context(pager=True)
    good = decide(Outcome(Kind.ESCALATED, "x", injury=INJURY), ctx)
    bad = decide(Outcome(Kind.FAILED, "x", injury=INJURY), ctx)
    assert exit_ok([good, good], pages_refused=0) is True
    assert exit_ok([good, bad], pages_refused=0) is False
    assert exit_ok([good], pages_refused=1) is False
    assert exit_ok([], pages_refused=0) is True


def test_outcome_names_its_injury_and_files() -> None:
    """An outcome carries its injury's id (or a raw payload's id) and every file its steps touched."""
    from auto_healer.outcomes import FileChange, StepReport

    a, b, c = FileChange("a", "delete"), FileChange("b", "modify"), FileChange("c", "delete")
    steps = (StepReport("x", "s", (a, b)), StepReport("y", "s"), StepReport("z", "s", (c,)))
    outcome = Outcome(Kind.HEALED, "r", injury=INJURY, steps=steps)
    assert outcome.injury_id == INJURY.id
    assert outcome.files == (a, b, c)
    assert Outcome(Kind.REJECTED, "r").injury_id is None
    assert Outcome(Kind.REJECTED, "r", raw_id="sha256-x").injury_id == "sha256-x"
    assert Outcome(Kind.REJECTED, "r").files == ()


@pytest.mark.parametrize(
    ("settles", "together"),
    [
        ([A, N, T], N),
        ([N], N),
        ([T, T], T),
        ([T], T),
        ([A, T], A),
        ([A], A),
        ([], A),
    ],
)
def test_an_envelope_is_settled_once_for_all_its_injuries(
    settles: list[Settle], together: Settle
) -> None:
    """Back if any must come back; terminated only if every one was refused; else acked."""
    from auto_healer.decision import settle_together

    assert settle_together(settles) is together


@pytest.mark.parametrize(
    ("redeliverable", "last", "pager", "settle", "page"),
    [
        (True, False, True, N, TRIG),
        (True, False, False, N, NO),
        (False, False, True, A, TRIG),
        (False, True, True, A, TRIG),
    ],
)
def test_the_held_injury_that_trips_the_breaker_carries_the_one_page(
    redeliverable: bool, last: bool, pager: bool, settle: Settle, page: PageAction
) -> None:
    """The trip's page is sent even as its injury goes back to the stream, and kept durable."""
    held = Outcome(Kind.HELD, "breaker open", injury=INJURY, page_held=True)
    d = decide(held, Context(redeliverable=redeliverable, last_attempt=last, pager=pager))
    assert (d.settle, d.page, d.page_durable, d.event_type) == (settle, page, True, "injury_held")
    assert d.dead_letter is last
    assert d.final(paged=False, dead_lettered=True) is settle


@pytest.mark.parametrize(
    ("kind", "event", "redeliverable", "last", "pager", "page"),
    [(Kind.HELD, "injury_held", True, False, True, TRIG),
     (Kind.HELD, "injury_held", False, False, True, TRIG),
     (Kind.HELD, "injury_held", False, True, True, TRIG),
     (Kind.HELD, "injury_held", True, False, False, NO),
     # auto_heal: false, a playbook could heal it: escalated, offering the approval
     (Kind.ESCALATED, "injury_escalated", True, False, True, TRIG),
     (Kind.ESCALATED, "injury_escalated", True, True, True, TRIG),
     (Kind.ESCALATED, "injury_escalated", False, False, True, TRIG),
     (Kind.ESCALATED, "injury_escalated", True, False, False, NO)],
)  # fmt: skip
def test_an_injury_kept_aside_for_approval_is_paged_and_its_message_settled(
    kind: Kind, event: str, redeliverable: bool, last: bool, pager: bool, page: PageAction
) -> None:
    """An approval request holds the injury: ack, page the plan durably, no dead letter, and
    never brought back, even when the page could not be sent yet (the outbox keeps it)."""
    aside = Outcome(kind, "awaiting approval", injury=INJURY, kept_aside=True)
    d = decide(aside, Context(redeliverable=redeliverable, last_attempt=last, pager=pager))
    assert (d.settle, d.page, d.page_durable, d.dead_letter) == (A, page, True, False)
    assert (d.event_type, d.ok, d.success) == (event, True, False)
    assert d.retry_if_incomplete is False
    assert d.final(paged=False, dead_lettered=False) is A


def test_an_escalation_not_kept_aside_comes_back_for_its_page() -> None:
    """A plain escalation whose page was not taken comes back while it can (not kept aside)."""
    plain = Outcome(Kind.ESCALATED, "auto_heal is false", injury=INJURY)
    d = decide(plain, Context(redeliverable=True, pager=True))
    assert (d.page, d.page_durable, d.retry_if_incomplete) == (TRIG, False, True)
    assert d.final(paged=False, dead_lettered=True) is N


@pytest.mark.parametrize(("resolves", "page"), [(True, RES), (False, NO)])
def test_a_rejected_approval_resolves_its_page(resolves: bool, page: PageAction) -> None:
    """A skip that closes a paged problem (rejected) resolves it; any other skip pages nothing."""
    skipped = Outcome(Kind.SKIPPED, "rejected by ops", injury=INJURY, resolves=resolves)
    d = decide(skipped, Context(redeliverable=True, pager=True))
    assert (d.settle, d.page, d.event_type, d.success) == (A, page, "injury_skipped", True)


# A consumer that redelivers without limit (`max_deliver = -1`): the agent's own budget of heal
# attempts (`heal_attempts` of `heal_budget`; None: not counted, the delivery count decides), and
# coordination outages, which are no heal attempt.
# (kind, retryable, outage, redeliverable, last_attempt, heal_attempts, heal_budget)
#   -> (settle, page, page_durable, dead_letter, retry_if_incomplete, nak_delay_s)
BUDGET_TABLE = [
    # An outage comes back in a few seconds, on any delivery the transport will make again.
    ((Kind.FAILED, True, True, True, False, None, 0), (N, NO, True, False, True, 3.0)),
    ((Kind.FAILED, True, True, True, True, None, 0), (N, NO, True, False, False, 3.0)),
    ((Kind.FAILED, True, True, True, True, 10, 10), (N, NO, True, False, False, 3.0)),
    # ... but a transport that cannot bring it back (a limited consumer's last delivery) gives up.
    ((Kind.FAILED, True, True, False, True, None, 0), (A, TRIG, True, True, False, 3.0)),
    ((Kind.FAILED, True, True, False, False, None, 0), (A, TRIG, True, False, False, 3.0)),
    # Counted heal attempts replace the delivery count: past 10 deliveries (outages), 2 of 10 heals.
    ((Kind.FAILED, True, False, True, True, 2, 10), (N, NO, True, False, True, 10.0)),
    ((Kind.FAILED, True, False, True, False, 9, 10), (N, NO, True, False, True, 300.0)),
    ((Kind.FAILED, True, False, True, False, 10, 10), (A, TRIG, True, True, False, 300.0)),
    ((Kind.FAILED, True, False, True, True, 11, 10), (A, TRIG, True, True, False, 300.0)),
    ((Kind.FAILED, True, False, False, True, 3, 10), (A, TRIG, True, True, False, 20.0)),
    # Not counted (the count itself failed): the delivery count decides, as on a limited consumer.
    ((Kind.FAILED, True, False, True, True, None, 10), (A, TRIG, True, True, False, 20.0)),
    ((Kind.FAILED, True, False, True, False, None, 10), (N, NO, True, False, True, 20.0)),
    # A permanent failure is no outage and has no budget: paged at once.
    ((Kind.FAILED, False, True, True, False, None, 0), (A, TRIG, False, False, True, 3.0)),
    ((Kind.FAILED, False, False, True, False, 1, 10), (A, TRIG, False, False, True, 5.0)),
    # Past the budget of deliveries, a trigger the pager cannot take now goes to the outbox.
    ((Kind.ESCALATED, False, False, True, True, None, 0), (A, TRIG, True, False, False, 20.0)),
    ((Kind.ESCALATED, False, False, True, False, None, 0), (A, TRIG, False, False, True, 20.0)),
    ((Kind.HEALED, False, True, True, False, None, 0), (A, RES, True, False, True, 20.0)),
]  # fmt: skip


@pytest.mark.parametrize(("given", "expected"), BUDGET_TABLE)
def test_budget_counts_heal_attempts_and_outages_come_back_soon(
    given: tuple[object, ...], expected: tuple[object, ...]
) -> None:
    """Each row of the budget table is exactly what decide() returns (pager on, 3rd delivery)."""
    kind, retryable, outage, redeliverable, last, heals, budget = given
    outcome = Outcome(
        kind,  # type: ignore[arg-type]
        "why",
        injury=INJURY,
        retryable=retryable,  # type: ignore[arg-type]
        store_unavailable=outage,  # type: ignore[arg-type]
    )
    ctx = Context(
        redeliverable=redeliverable,  # type: ignore[arg-type]
        last_attempt=last,  # type: ignore[arg-type]
        attempt=3,
        heal_attempts=heals,  # type: ignore[arg-type]
        heal_budget=budget,  # type: ignore[arg-type]
        pager=True,
    )
    d = decide(outcome, ctx)
    got = (d.settle, d.page, d.page_durable, d.dead_letter, d.retry_if_incomplete, d.nak_delay_s)
    assert got == expected


# A heal pushed but not shown by the remote head (`verified` False, see verification.py): failed,
# paged whatever `on_failure` says, acked, never brought back (nor its page left to a redelivery).
# (retryable, page_on_failure, redeliverable, last_attempt, pager)
#   -> (settle, page, page_durable, dead_letter, retry_if_incomplete)
UNVERIFIED_TABLE = [
    ((False, True, True, False, True), (A, TRIG, True, False, False)),
    ((False, False, True, False, True), (A, TRIG, True, False, False)),
    ((False, True, False, True, True), (A, TRIG, True, False, False)),
    ((False, True, False, False, True), (A, TRIG, True, False, False)),
    ((True, True, True, False, True), (A, TRIG, True, False, False)),
    ((True, False, True, True, True), (A, TRIG, True, False, False)),
    ((False, True, True, False, False), (A, NO, True, False, False)),
]  # fmt: skip


@pytest.mark.parametrize(("given", "expected"), UNVERIFIED_TABLE)
def test_a_heal_the_remote_does_not_show_is_a_failed_heal_and_paged(
    given: tuple[bool, ...], expected: tuple[object, ...]
) -> None:
    """`verified` False: injury_heal_failed, not ok, paged durably, acked, no dead letter."""
    retryable, on_failure, redeliverable, last, pager = given
    outcome = Outcome(
        Kind.FAILED,
        "pushed, but not verified",
        injury=INJURY,
        retryable=retryable,
        page_on_failure=on_failure,
        commit="c0ffee",
        verified=False,
    )
    ctx = Context(redeliverable=redeliverable, last_attempt=last, attempt=3, pager=pager)
    d = decide(outcome, ctx)
    got = (d.settle, d.page, d.page_durable, d.dead_letter, d.retry_if_incomplete)
    assert got == expected
    assert (d.event_type, d.success, d.ok) == ("injury_heal_failed", False, False)
    assert d.final(paged=False, dead_lettered=True) is A


@pytest.mark.parametrize(
    ("kind", "verified", "page", "retry"),
    [(Kind.HEALED, True, RES, True), (Kind.FAILED, None, NO, True), (Kind.FAILED, True, NO, True),
     (Kind.HEALED, None, RES, True)],
)  # fmt: skip
def test_only_a_heal_not_verified_pages_past_on_failure_report(
    kind: Kind, verified: bool | None, page: PageAction, retry: bool
) -> None:
    """A verified heal resolves; a failure not about verification keeps `on_failure: report`."""
    outcome = Outcome(kind, "x", injury=INJURY, page_on_failure=False, verified=verified)
    d = decide(outcome, Context(redeliverable=True, pager=True))
    assert (d.page, d.retry_if_incomplete, d.settle) == (page, retry, A)


@pytest.mark.parametrize(
    ("kind", "commit", "verified", "pushed"),
    [(Kind.HEALED, "c", True, True), (Kind.HEALED, "c", None, True), (Kind.HEALED, None, True, False),
     (Kind.FAILED, "c", False, True), (Kind.FAILED, "c", None, False), (Kind.FAILED, None, False, False),
     (Kind.SKIPPED, "c", None, False), (Kind.SKIPPED, "c", False, False)],
)  # fmt: skip
def test_an_outcome_says_whether_a_heal_commit_reached_the_remote(
    kind: Kind, commit: str | None, verified: bool | None, pushed: bool
) -> None:
    """Healed with a commit, or failed only because the remote head does not show it."""
    outcome = Outcome(kind, "x", injury=INJURY, commit=commit, verified=verified)
    assert outcome.pushed is pushed


class _Reading:
    """An outcome that notes which of its attributes are read."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome, self.read = outcome, set[str]()

    def __getattr__(self, name: str) -> object:
        self.read.add(name)
        return getattr(self.outcome, name)
