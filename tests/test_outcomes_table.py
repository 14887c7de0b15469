"""The decision table of `outcomes`: every outcome's settle, page, event and status, spelled out.

The expected values are written here by hand, row by row, from the contract in the README and
the docstrings; none is computed by calling the code under test. `make mutation` runs these
tests against mutants of `outcomes.py`, so each row and edge case below pins one decision.
"""

from __future__ import annotations

import itertools

import pytest
from auto_healer.contracts import ParsedInjury, parse_injury_obj
from auto_healer.outcomes import (
    Consequence,
    FileChange,
    Kind,
    Outcome,
    PageAction,
    Settle,
    StepReport,
    announce,
    consequence,
    exit_ok,
    nak_delay_s,
    page_durably,
    settlement,
)

from tests.conftest import injury

HEALED, PLANNED, SKIPPED = Kind.HEALED, Kind.PLANNED, Kind.SKIPPED
ESCALATED, FAILED, REJECTED = Kind.ESCALATED, Kind.FAILED, Kind.REJECTED
ACK, NAK, TERM = Settle.ACK, Settle.NAK, Settle.TERM
NONE, TRIGGER, RESOLVE = PageAction.NONE, PageAction.TRIGGER, PageAction.RESOLVE

EVENTS = {
    HEALED: "injury_healed",
    PLANNED: "injury_heal_planned",
    SKIPPED: "injury_skipped",
    ESCALATED: "injury_escalated",
    FAILED: "injury_heal_failed",
    REJECTED: "injury_rejected",
}

# kind, retryable, can_redeliver, out_of_deliveries, injury present (page_on_failure is True)
#   -> settle, page, dead_letter, ok, success
TABLE = [
    (HEALED, 0, 0, 0, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 0, 0, 0, 1, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 0, 0, 1, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 0, 0, 1, 1, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 0, 1, 0, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 0, 1, 0, 1, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 0, 1, 1, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 0, 1, 1, 1, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 0, 0, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 0, 0, 1, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 0, 1, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 0, 1, 1, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 1, 0, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 1, 0, 1, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 1, 1, 0, ACK, RESOLVE, 0, 1, 1),
    (HEALED, 1, 1, 1, 1, ACK, RESOLVE, 0, 1, 1),
    (PLANNED, 0, 0, 0, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 0, 0, 0, 1, ACK, NONE, 0, 1, 1),
    (PLANNED, 0, 0, 1, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 0, 0, 1, 1, ACK, NONE, 0, 1, 1),
    (PLANNED, 0, 1, 0, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 0, 1, 0, 1, ACK, NONE, 0, 1, 1),
    (PLANNED, 0, 1, 1, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 0, 1, 1, 1, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 0, 0, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 0, 0, 1, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 0, 1, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 0, 1, 1, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 1, 0, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 1, 0, 1, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 1, 1, 0, ACK, NONE, 0, 1, 1),
    (PLANNED, 1, 1, 1, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 0, 0, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 0, 0, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 0, 1, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 0, 1, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 1, 0, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 1, 0, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 1, 1, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 0, 1, 1, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 0, 0, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 0, 0, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 0, 1, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 0, 1, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 1, 0, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 1, 0, 1, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 1, 1, 0, ACK, NONE, 0, 1, 1),
    (SKIPPED, 1, 1, 1, 1, ACK, NONE, 0, 1, 1),
    (ESCALATED, 0, 0, 0, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 0, 0, 0, 1, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 0, 0, 1, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 0, 0, 1, 1, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 0, 1, 0, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 0, 1, 0, 1, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 0, 1, 1, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 0, 1, 1, 1, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 0, 0, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 0, 0, 1, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 0, 1, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 0, 1, 1, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 1, 0, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 1, 0, 1, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 1, 1, 0, ACK, TRIGGER, 0, 1, 0),
    (ESCALATED, 1, 1, 1, 1, ACK, TRIGGER, 0, 1, 0),
    (FAILED, 0, 0, 0, 0, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 0, 0, 0, 1, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 0, 0, 1, 0, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 0, 0, 1, 1, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 0, 1, 0, 0, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 0, 1, 0, 1, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 0, 1, 1, 0, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 0, 1, 1, 1, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 1, 0, 0, 0, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 1, 0, 0, 1, ACK, TRIGGER, 0, 0, 0),
    (FAILED, 1, 0, 1, 0, ACK, TRIGGER, 1, 0, 0),
    (FAILED, 1, 0, 1, 1, ACK, TRIGGER, 1, 0, 0),
    (FAILED, 1, 1, 0, 0, NAK, NONE, 0, 0, 0),
    (FAILED, 1, 1, 0, 1, NAK, NONE, 0, 0, 0),
    (FAILED, 1, 1, 1, 0, NAK, NONE, 0, 0, 0),
    (FAILED, 1, 1, 1, 1, NAK, NONE, 0, 0, 0),
    (REJECTED, 0, 0, 0, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 0, 0, 0, 1, TERM, TRIGGER, 1, 0, 0),
    (REJECTED, 0, 0, 1, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 0, 0, 1, 1, TERM, TRIGGER, 1, 0, 0),
    (REJECTED, 0, 1, 0, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 0, 1, 0, 1, TERM, TRIGGER, 1, 0, 0),
    (REJECTED, 0, 1, 1, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 0, 1, 1, 1, TERM, TRIGGER, 1, 0, 0),
    (REJECTED, 1, 0, 0, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 1, 0, 0, 1, TERM, TRIGGER, 1, 0, 0),
    (REJECTED, 1, 0, 1, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 1, 0, 1, 1, TERM, TRIGGER, 1, 0, 0),
    (REJECTED, 1, 1, 0, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 1, 1, 0, 1, TERM, TRIGGER, 1, 0, 0),
    (REJECTED, 1, 1, 1, 0, TERM, NONE, 1, 0, 0),
    (REJECTED, 1, 1, 1, 1, TERM, TRIGGER, 1, 0, 0),
]

# A FAILED outcome whose playbook says not to escalate: the same rows, never a page.
QUIET_FAILED = [
    (FAILED, 0, 0, 0, 0, ACK, NONE, 0, 0, 0),
    (FAILED, 0, 0, 0, 1, ACK, NONE, 0, 0, 0),
    (FAILED, 0, 0, 1, 0, ACK, NONE, 0, 0, 0),
    (FAILED, 0, 0, 1, 1, ACK, NONE, 0, 0, 0),
    (FAILED, 0, 1, 0, 0, ACK, NONE, 0, 0, 0),
    (FAILED, 0, 1, 0, 1, ACK, NONE, 0, 0, 0),
    (FAILED, 0, 1, 1, 0, ACK, NONE, 0, 0, 0),
    (FAILED, 0, 1, 1, 1, ACK, NONE, 0, 0, 0),
    (FAILED, 1, 0, 0, 0, ACK, NONE, 0, 0, 0),
    (FAILED, 1, 0, 0, 1, ACK, NONE, 0, 0, 0),
    (FAILED, 1, 0, 1, 0, ACK, NONE, 1, 0, 0),
    (FAILED, 1, 0, 1, 1, ACK, NONE, 1, 0, 0),
    (FAILED, 1, 1, 0, 0, NAK, NONE, 0, 0, 0),
    (FAILED, 1, 1, 0, 1, NAK, NONE, 0, 0, 0),
    (FAILED, 1, 1, 1, 0, NAK, NONE, 0, 0, 0),
    (FAILED, 1, 1, 1, 1, NAK, NONE, 0, 0, 0),
]

Row = tuple[Kind, int, int, int, int, Settle, PageAction, int, int, int]


def _injury() -> ParsedInjury:
    return parse_injury_obj(injury("core/src/x/"))


def _decide(row: Row, *, page_on_failure: bool) -> tuple[Consequence, Consequence]:
    kind, retryable, can_redeliver, last, injured, settle, page, dead, ok, success = row
    outcome = Outcome(
        kind,
        "reason",
        injury=_injury() if injured else None,
        retryable=bool(retryable),
        page_on_failure=page_on_failure,
    )
    got = consequence(outcome, can_redeliver=bool(can_redeliver), out_of_deliveries=bool(last))
    want = Consequence(settle, page, EVENTS[kind], bool(dead), ok=bool(ok), success=bool(success))
    return got, want


def test_the_table_covers_every_combination_once() -> None:
    """Every kind x retryable x can_redeliver x out_of_deliveries x injury has exactly one row."""
    keys = [row[:5] for row in TABLE]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(itertools.product(list(Kind), (0, 1), (0, 1), (0, 1), (0, 1)))
    assert {row[:5] for row in QUIET_FAILED} == {k for k in keys if k[0] is FAILED}


@pytest.mark.parametrize("row", TABLE, ids=lambda r: "-".join(map(str, r[:5])))
def test_consequence_follows_the_table(row: Row) -> None:
    """The full consequence of each outcome is exactly its row of the table."""
    got, want = _decide(row, page_on_failure=True)
    assert got == want


@pytest.mark.parametrize("row", QUIET_FAILED, ids=lambda r: "-".join(map(str, r[:5])))
def test_failure_without_escalation_is_never_paged(row: Row) -> None:
    """A failed heal whose playbook does not escalate is settled as usual but never paged."""
    got, want = _decide(row, page_on_failure=False)
    assert got == want


def test_consequence_defaults_to_no_redelivery_and_deliveries_left() -> None:
    """Without keyword arguments a retryable failure is paged, not nak'd, and not dead-lettered."""
    got = consequence(Outcome(FAILED, "r", retryable=True))
    assert got == Consequence(ACK, TRIGGER, "injury_heal_failed", False, ok=False, success=False)


@pytest.mark.parametrize(
    ("page", "can_redeliver", "durable"),
    [
        (NONE, False, True),
        (NONE, True, True),
        (RESOLVE, False, True),
        (RESOLVE, True, True),
        (TRIGGER, False, True),
        (TRIGGER, True, False),
    ],
)
def test_page_durably(page: PageAction, can_redeliver: bool, durable: bool) -> None:
    """Only a trigger whose message can come back waits for redelivery instead of the outbox."""
    c = Consequence(ACK, page, "e", False, ok=True, success=True)
    assert page_durably(c, can_redeliver=can_redeliver) is durable


@pytest.mark.parametrize(
    ("settle", "can_redeliver", "paged", "lettered", "final"),
    [
        (ACK, False, False, False, ACK),
        (ACK, False, True, True, ACK),
        (ACK, True, True, True, ACK),
        (ACK, True, False, True, NAK),
        (ACK, True, True, False, NAK),
        (ACK, True, False, False, NAK),
        (TERM, False, False, False, TERM),
        (TERM, True, True, True, TERM),
        (TERM, True, True, False, NAK),
        (TERM, True, False, True, NAK),
    ],
)
def test_settlement(
    settle: Settle, can_redeliver: bool, paged: bool, lettered: bool, final: Settle
) -> None:
    """What was not kept yet brings the message back while it can come back, never after."""
    c = Consequence(settle, TRIGGER, "e", False, ok=False, success=False)
    got = settlement(c, can_redeliver=can_redeliver, page_delivered=paged, dead_lettered=lettered)
    assert got is final


def test_settlement_defaults_to_everything_kept() -> None:
    """By default the page was delivered and the dead letter written: the decision stands."""
    c = Consequence(TERM, TRIGGER, "e", True, ok=False, success=False)
    assert settlement(c, can_redeliver=True) is TERM


@pytest.mark.parametrize(("settle", "announced"), [(ACK, True), (NAK, False), (TERM, True)])
def test_announce(settle: Settle, announced: bool) -> None:
    """An outcome is announced when final (ack, term), not when nak'd for a later delivery."""
    assert announce(settle) is announced


@pytest.mark.parametrize(
    ("oks", "refused", "expected"),
    [
        ((), 0, True),
        ((True,), 0, True),
        ((True, True), 0, True),
        ((True, False), 0, False),
        ((False,), 0, False),
        ((True,), 1, False),
        ((True,), 2, False),
    ],
)
def test_exit_ok(oks: tuple[bool, ...], refused: int, expected: bool) -> None:
    """The one-shot succeeds only if every outcome is fine and no page was refused."""
    cs = [Consequence(ACK, NONE, "e", False, ok=ok, success=ok) for ok in oks]
    assert exit_ok(cs, pages_refused=refused) is expected


@pytest.mark.parametrize(
    ("deliveries", "delay"),
    [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0), (7, 300.0), (50, 300.0)],
)
def test_nak_delay_doubles_up_to_five_minutes(deliveries: int, delay: float) -> None:
    """Redeliveries back off 5 s, 10 s, 20 s ... and never wait more than five minutes."""
    got = nak_delay_s(deliveries)
    assert type(got) is float
    assert got == delay


def test_nak_delay_takes_its_base_and_cap() -> None:
    """The base and the cap of the back-off are parameters."""
    assert nak_delay_s(3, base_s=1.5, max_s=100.0) == 6.0
    assert nak_delay_s(3, base_s=1.5, max_s=4.0) == 4.0


def test_outcome_names_its_injury_and_files() -> None:
    """An outcome carries its injury's id (none without one) and every file its steps touched."""
    a, b, c = FileChange("a", "delete"), FileChange("b", "modify"), FileChange("c", "delete")
    steps = (StepReport("x", "s", (a, b)), StepReport("y", "s"), StepReport("z", "s", (c,)))
    parsed = _injury()
    outcome = Outcome(HEALED, "r", injury=parsed, steps=steps)
    assert outcome.injury_id == parsed.id
    assert outcome.files == (a, b, c)
    assert Outcome(REJECTED, "r").injury_id is None
    assert Outcome(REJECTED, "r").files == ()
