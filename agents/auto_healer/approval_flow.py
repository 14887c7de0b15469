"""Approval requests in the pipeline: asking a human, and carrying out what was decided.

`ask()` turns an injury into a pending request (see `approvals`) and a `held` outcome that pages
the plan and the two commands (an `auto_heal: false` injury a playbook could heal: an
`escalated` outcome that offers the same). `Desk` watches the requests through the controls'
mirror and, once across replicas (the compare-and-set winner), heals what was approved, closes
what was rejected, escalates what expired, and takes over a heal whose replica died mid-way
(a live owner keeps its `healing_since` fresh, however long the heal takes).

With a signing key, a decision whose signature does not hold (unsigned, or signed with another
key, or a request altered after it was decided) is not carried out: the request goes back to
`pending`, the log warns, and a `held` outcome pages and records in the history that a forged
decision was ignored. So is a signed decision already carried out (seen `done`) and written
back as `approved` or `healing`: a replay, once the healed id is forgotten, would heal again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from auto_healer import approvals
from auto_healer.contracts import ParsedInjury
from auto_healer.errors import CoordinationUnavailable, TransientError
from auto_healer.outcomes import Kind, Outcome
from auto_healer.paths import first_protected
from auto_healer.playbooks import Playbook

if TYPE_CHECKING:
    from auto_healer.guard import Guard

log = structlog.get_logger("auto_healer.approvals")
HealOne = Callable[[ParsedInjury], Awaitable[Outcome]]
Announce = Callable[[Outcome], Awaitable[None]]  # decide and carry out an outcome with no message
DECIDED = ("approved", "rejected", "healing")  # the states a signed decision put a request in


class Heal(Protocol):
    """The healer's `handle`: `approved` heals an `auto_heal: false` injury a human approved."""

    def __call__(self, parsed: ParsedInjury, *, approved: bool = False) -> Awaitable[Outcome]: ...


def can_heal(parsed: ParsedInjury, playbook: Playbook) -> bool:
    """Whether a human's approval could let `playbook` heal this injury: no `escalate` step
    (which escalates whatever the approval), and a path the healer would touch at all."""
    if any(step.action == "escalate" for step in playbook.steps) or parsed.path is None:
        return False
    return parsed.path == "." or first_protected(parsed.path, playbook.protected_globs) is None


async def ask(
    cells: Any,
    parsed: ParsedInjury,
    playbook: Playbook,
    because: str = "",
    *,
    escalate: bool = False,
) -> Outcome:
    """Keep the injury as a pending approval request; page the plan and the commands. The
    outcome is `held`, or with `escalate` (an `auto_heal: false` injury, which asks for a
    human) `escalated`; either is kept aside, as the request now holds the injury."""
    expires_s = playbook.approval.expires_s if playbook.approval else 86400.0
    steps = ", ".join(s.action for s in playbook.steps)
    plan = f"playbook {playbook.name}: {steps} on {parsed.path or parsed.injury.affected_path}"
    now = time.time()
    request = approvals.Request(
        injury_id=parsed.id,
        playbook=playbook.name,
        state="pending",
        parsed=parsed.model_dump(mode="json"),
        plan=plan,
        requested_at=now,
        expires_at=now + expires_s,
    )
    try:
        created, current = await approvals.ask(cells, request)
    except TransientError as exc:
        return Outcome(
            Kind.FAILED,
            str(exc),
            injury=parsed,
            playbook=playbook.name,
            retryable=True,
            store_unavailable=isinstance(exc, CoordinationUnavailable),
        )
    if not created:
        why = f"approval request already {current.state}" + (
            f" by {current.by}" if current.by else ""
        )
        return Outcome(Kind.SKIPPED, why, injury=parsed, playbook=playbook.name)
    log.info("approval_requested", playbook=playbook.name, expires_at=request.expires_at)
    why = f"{because}; " if because else ""
    return Outcome(
        Kind.ESCALATED if escalate else Kind.HELD,
        f"{why}awaiting approval: {plan}. {_commands(parsed.id)} within {expires_s:g} s",
        injury=parsed,
        playbook=playbook.name,
        kept_aside=True,
    )


def _commands(injury_id: str) -> str:
    return (
        f"Decide with `auto-healer approve {injury_id}` or "
        f"`auto-healer reject {injury_id} --reason TEXT`"
    )


class Desk:
    """Carries out the requests humans decided, on whichever replica wins each one."""

    def __init__(
        self, guard: Guard, *, signing_key: bytes | None, reclaim_after_s: float = 900.0
    ) -> None:
        self.guard, self.signing_key, self.reclaim_after_s = guard, signing_key, reclaim_after_s
        # signatures of decisions seen carried out: one written back to `approved` (or to a
        # stale `healing`) is a replay of a human's decision, never a new one
        self._spent: set[str] = set()

    async def run(self, heal: Heal, announce: Announce, owner: str) -> None:
        """Settle every request as the mirror shows it, again on each change (and each
        second, for expiries and take-overs). Runs until cancelled."""
        mirror = self.guard.controls
        if mirror.cells is None:
            return
        while True:
            for value in list(mirror.approvals.values()):
                request = approvals.load(value)
                if request is not None:
                    with contextlib.suppress(TransientError):
                        await self.settle(mirror.cells, request, heal, announce, owner)
            mirror.approvals_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(mirror.approvals_seen.wait(), 1.0)

    async def settle(
        self, cells: Any, request: approvals.Request, heal: Heal, announce: Announce, owner: str
    ) -> None:
        """Carry out one request, if it is this replica's to carry out now."""
        parsed = ParsedInjury.model_validate(request.parsed)
        ident, now, state = request.injury_id, time.time(), request.state
        if state == "done" and request.signature:
            self._spent.add(request.signature)
        if state == "pending":
            if now >= request.expires_at and await approvals.move(
                cells, ident, frm=("pending",), to="expired", owner=owner
            ):
                why = f"approval expired: nobody decided within its time ({request.plan})"
                await announce(
                    Outcome(Kind.ESCALATED, why, injury=parsed, playbook=request.playbook)
                )
            return
        if state == "healing" and not request.stale(now, self.reclaim_after_s):
            return  # its owner is at it
        if state not in DECIDED:
            return
        if self.signing_key and not approvals.decision_holds(request, self.signing_key):
            how = "unsigned" if not request.signature else "its signature does not hold"
            await self._ignore_forged(cells, request, parsed, announce, owner, how)
        elif self.signing_key and request.signature in self._spent:
            how = "a decision already carried out, written back"
            await self._ignore_forged(cells, request, parsed, announce, owner, how)
        elif state == "rejected":
            if await approvals.move(cells, ident, frm=("rejected",), to="closed", owner=owner):
                why = f"rejected by {request.by}" + (
                    f": {request.reason}" if request.reason else ""
                )
                await announce(
                    Outcome(
                        Kind.SKIPPED, why, injury=parsed, playbook=request.playbook, resolves=True
                    )
                )
        else:
            await self._heal(cells, request, parsed, heal, announce, owner)

    async def _heal(
        self,
        cells: Any,
        request: approvals.Request,
        parsed: ParsedInjury,
        heal: Heal,
        announce: Announce,
        owner: str,
    ) -> None:
        ident, guard, now = request.injury_id, self.guard, time.time()
        playbook = guard.playbooks.match(parsed.injury)
        if playbook is None or guard.held(playbook):
            return  # it waits, approved, for the resume or the reset
        if request.state == "healing":  # taken over from a replica that died mid-heal
            took = await approvals.move(
                cells,
                ident,
                frm=("healing",),
                to="healing",
                when=lambda r: r.stale(time.time(), self.reclaim_after_s),
                owner=owner,
                healing_since=now,
            )
            if took:
                log.warning("approval_reclaimed", previous_owner=request.owner)
        else:
            took = await approvals.move(
                cells, ident, frm=("approved",), to="healing", owner=owner, healing_since=now
            )
        if not took:
            return

        async def approved(p: ParsedInjury) -> Outcome:
            return await heal(p, approved=True)

        fresh = asyncio.create_task(self._keep_fresh(cells, ident, owner))
        try:
            outcome = await guard.heal_counted(parsed, playbook, approved)
        finally:
            fresh.cancel()
        if outcome.kind is Kind.HELD:  # the breaker tripped meanwhile: approved, it waits
            await approvals.move(cells, ident, frm=("healing",), to="approved")
            return
        if request.signature:
            self._spent.add(request.signature)
        await approvals.move(cells, ident, frm=("healing",), to="done", commit=outcome.commit)
        await announce(replace(outcome, reason=f"{outcome.reason} (approved by {request.by})"))

    async def _keep_fresh(self, cells: Any, ident: str, owner: str) -> None:
        """While this replica heals a request, say so (`healing_since`) more often than
        `reclaim_after_s`: a live owner's slow heal is never taken over and carried out twice."""
        while True:
            await asyncio.sleep(self.reclaim_after_s / 3)
            with contextlib.suppress(TransientError):
                await approvals.move(
                    cells,
                    ident,
                    frm=("healing",),
                    to="healing",
                    when=lambda r: r.owner == owner,
                    healing_since=time.time(),
                )

    async def _ignore_forged(
        self,
        cells: Any,
        request: approvals.Request,
        parsed: ParsedInjury,
        announce: Announce,
        owner: str,
        how: str,
    ) -> None:
        """A decision not signed with our key, or replayed: back to pending, warned, paged,
        recorded."""
        back = await approvals.move(
            cells,
            request.injury_id,
            frm=(request.state,),
            to="pending",
            when=lambda r: r == request,  # exactly what was checked, no newer decision
            by=None,
            decided_at=None,
            decided_rev=None,
            signature=None,
            reason="",
            owner=owner,
            healing_since=None,
        )
        if back is None:
            return
        log.warning(
            "forged_decision_ignored", state=request.state, claimed_by=request.by, problem=how
        )
        why = (
            f"a forged decision was ignored: {request.state} 'by {request.by}' ({how}; "
            f"INJURY_SIGNING_KEY is set); still awaiting approval: {request.plan}. "
            + _commands(request.injury_id)
        )
        await announce(
            Outcome(Kind.HELD, why, injury=parsed, playbook=request.playbook, kept_aside=True)
        )
