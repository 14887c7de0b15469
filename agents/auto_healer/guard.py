"""The operator controls in the pipeline: before a heal, the pause and the breaker are asked.

The agent hands each admitted injury to `Guard.handle()` with the healer's `handle` as `heal`.
An injury a playbook would heal is held while paused (everything or its playbook) or while the
repository's breaker is open; otherwise the breaker reserves its place, the heal runs, and a
place that did not heal is given back. Whatever would not be healed anyway (no playbook,
`auto_heal: false`) goes straight on, so those escalations still page while paused.

A held injury is an outcome (`Kind.HELD`); `decision.decide()` says what becomes of it. In
JetStream mode `run()` also closes the intake while paused or tripped (`controls.gate_intake`),
so waiting injuries stay in the stream and are not redelivered to death meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog

from auto_healer import approvals, breaker, recurrence
from auto_healer.contracts import ParsedInjury
from auto_healer.controls import BREAKER_PREFIX, BUCKET_CONTROLS, Cells, Controls, gate_intake
from auto_healer.errors import CoordinationUnavailable, TransientError
from auto_healer.kvcell import KvCell
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import Playbook, Playbooks
from auto_healer.reservations import Reservations
from auto_healer.settings import ControlSettings

log = structlog.get_logger("auto_healer.guard")
Heal = Callable[[ParsedInjury], Awaitable[Outcome]]
Announce = Callable[[Outcome], Awaitable[None]]  # decide and carry out an outcome with no message


class Guard:
    """Holds injuries for the pause and the breaker; counts heals against the breaker."""

    def __init__(
        self, controls: Controls, playbooks: Playbooks, *, repo: str, limits: breaker.Limits
    ) -> None:
        self.controls, self.playbooks = controls, playbooks
        self.repo, self.limits = repo, limits
        self._breaker_key = breaker.breaker_key(repo).removeprefix(BREAKER_PREFIX)
        self._reserving: set[tuple[str, str]] = set()  # problems holding a breaker place here
        # One compare-and-set on the breaker's one key at a time from this replica: a burst of
        # hundreds in flight would otherwise race each other past the retry bound.
        self._breaker_turn = asyncio.Lock()
        self._reservations = Reservations(self._breaker_turn)  # all waiting, in one turn

    async def handle(self, parsed: ParsedInjury, heal: Heal) -> Outcome:
        """The outcome of one admitted injury: held, or healed (or not) by `heal`."""
        playbook = self.playbooks.match(parsed.injury)
        if playbook is None or not playbook.adopt(parsed).injury.auto_heal:
            return await heal(parsed)
        pause = self.controls.paused(playbook.name)
        if pause is not None:
            return _held(parsed, playbook.name, pause.describe())
        if playbook.approval is not None and playbook.approval.required:
            return await self._ask(parsed, playbook)
        try:
            why = await self._does_not_hold(parsed, playbook)
        except TransientError as exc:
            return _store_failed(parsed, playbook.name, exc)
        if why:
            return await self._ask(parsed, playbook, because=why)
        return await self._recorded(parsed, playbook, await self._counted(parsed, playbook, heal))

    async def _does_not_hold(self, parsed: ParsedInjury, playbook: Playbook) -> str | None:
        """Why this problem's fix does not hold (healed too often already), if it does not."""
        rule, cells = playbook.recurrence, self.controls.cells
        if rule is None or cells is None:
            return None
        key = recurrence.recurrence_key(self.repo, parsed.injury.injury_type, parsed.problem)
        past = await recurrence.heals(cells, key, rule.window_s)
        if len(past.commits) < rule.max_heals:
            return None
        log.error("fix_does_not_hold", playbook=playbook.name, heals=len(past.commits))
        commits = ", ".join(c[:12] for c in past.commits)
        return (
            f"the fix does not hold: healed {len(past.commits)} times within "
            f"{rule.window_s:g} s (commits {commits}) and back again"
        )

    async def _recorded(
        self, parsed: ParsedInjury, playbook: Playbook, outcome: Outcome
    ) -> Outcome:
        """Count a heal of a problem whose playbook watches recurrence (one the remote head
        does not show as well: a problem put back after every heal is a fix that does not
        hold)."""
        rule, cells = playbook.recurrence, self.controls.cells
        if rule is not None and cells is not None and outcome.pushed and outcome.commit:
            key = recurrence.recurrence_key(self.repo, parsed.injury.injury_type, parsed.problem)
            with contextlib.suppress(TransientError):  # at worst one heal goes uncounted
                await recurrence.record(cells, key, outcome.commit, rule.window_s)
        return outcome

    async def _counted(self, parsed: ParsedInjury, playbook: Playbook, heal: Heal) -> Outcome:
        """Heal within the breaker: reserve a place, give it back unless healed."""
        cells = self.controls.cells
        problem = (parsed.injury.injury_type, parsed.problem)
        if cells is None or self.limits.max_heals == 0 or problem in self._reserving:
            # The same problem already holds a place here: a storm of identical injuries heals
            # once (throttle, path lock, already healthy), so it is counted once, not tripped.
            return await heal(parsed)
        self._reserving.add(problem)
        try:
            return await self._within_breaker(parsed, playbook, heal, cells)
        finally:
            self._reserving.discard(problem)

    async def _within_breaker(
        self, parsed: ParsedInjury, playbook: Playbook, heal: Heal, cells: Cells
    ) -> Outcome:
        """Reserve a breaker place for this heal; hold the injury when the breaker is open."""
        try:
            verdict = await self._reservations.reserve(cells, self.repo, self.limits)
        except TransientError as exc:
            return _store_failed(parsed, playbook.name, exc)
        if verdict is not breaker.Verdict.GO:
            why = (
                f"blast-radius breaker open on {self.repo}: more than {self.limits.max_heals} "
                f"heals within {self.limits.window_s:g} s; held until `auto-healer reset-breaker "
                f"{self.repo}`" + ("" if self.limits.manual_reset else " or the window ends")
            )
            if verdict is breaker.Verdict.TRIPPED:
                log.error("breaker_tripped", repo=self.repo, max_heals=self.limits.max_heals)
            return _held(parsed, playbook.name, why, page=verdict is breaker.Verdict.TRIPPED)
        healed = False
        try:
            outcome = await heal(parsed)
            healed = outcome.pushed  # a push the remote head does not show changed it too
            return outcome
        finally:
            if not healed:  # also when cut off by shutdown: its redelivery reserves again
                with contextlib.suppress(Exception):  # at worst the window counts one too many
                    await asyncio.shield(self._release(cells))

    async def _release(self, cells: Cells) -> None:
        async with self._breaker_turn:
            await breaker.release(cells, self.repo)

    async def _ask(self, parsed: ParsedInjury, playbook: Playbook, because: str = "") -> Outcome:
        """Keep the injury as a pending approval request; page the plan and the commands."""
        cells = self.controls.cells
        if cells is None:
            why = "the playbook needs approval, and approvals need JetStream KV on the server"
            return Outcome(Kind.ESCALATED, why, injury=parsed, playbook=playbook.name)
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
            return _store_failed(parsed, playbook.name, exc)
        if not created:
            why = f"approval request already {current.state}" + (
                f" by {current.by}" if current.by else ""
            )
            return Outcome(Kind.SKIPPED, why, injury=parsed, playbook=playbook.name)
        why = (
            (f"{because}; " if because else "")
            + f"awaiting approval: {plan}. Decide with `auto-healer approve {parsed.id}` or "
            f"`auto-healer reject {parsed.id} --reason TEXT` within "
            f"{expires_s:g} s"
        )
        log.info("approval_requested", playbook=playbook.name, expires_at=request.expires_at)
        return Outcome(Kind.HELD, why, injury=parsed, playbook=playbook.name, kept_aside=True)

    async def carry_out_approvals(self, heal: Heal, announce: Announce, owner: str) -> None:
        """Carry out what humans decided (and escalate what expired), once across replicas:
        the replica whose compare-and-set wins does it. Runs until cancelled."""
        cells = self.controls.cells
        if cells is None:
            return
        while True:
            for value in list(self.controls.approvals.values()):
                request = approvals.load(value)
                if request is not None:
                    with contextlib.suppress(TransientError):
                        await self._settle_request(cells, request, heal, announce, owner)
            self.controls.approvals_seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.controls.approvals_seen.wait(), 1.0)

    async def _settle_request(
        self, cells: Any, request: approvals.Request, heal: Heal, announce: Announce, owner: str
    ) -> None:
        parsed = ParsedInjury.model_validate(request.parsed)
        ident = request.injury_id
        if request.state == "pending" and time.time() >= request.expires_at:
            if await approvals.move(cells, ident, frm=("pending",), to="expired", owner=owner):
                why = f"approval expired: nobody decided within its time ({request.plan})"
                await announce(
                    Outcome(Kind.ESCALATED, why, injury=parsed, playbook=request.playbook)
                )
        elif request.state == "rejected":
            if await approvals.move(cells, ident, frm=("rejected",), to="closed", owner=owner):
                why = f"rejected by {request.by}" + (
                    f": {request.reason}" if request.reason else ""
                )
                await announce(
                    Outcome(
                        Kind.SKIPPED, why, injury=parsed, playbook=request.playbook, resolves=True
                    )
                )
        elif request.state == "approved":
            playbook = self.playbooks.match(parsed.injury)
            if playbook is None or self.controls.paused(playbook.name) or self.breaker_open():
                return  # it waits, approved, for the resume or the reset
            if not await approvals.move(cells, ident, frm=("approved",), to="healing", owner=owner):
                return
            outcome = await self._recorded(
                parsed, playbook, await self._counted(parsed, playbook, heal)
            )
            if outcome.kind is Kind.HELD:  # the breaker tripped meanwhile: approved, it waits
                await approvals.move(cells, ident, frm=("healing",), to="approved")
                return
            await approvals.move(cells, ident, frm=("healing",), to="done", commit=outcome.commit)
            await announce(replace(outcome, reason=f"{outcome.reason} (approved by {request.by})"))

    def paused(self) -> bool:
        return self.controls.paused() is not None

    def breaker_open(self) -> bool:
        return breaker.is_open(self.controls.breakers.get(self._breaker_key), self.limits)

    def intake_closed(self) -> bool:
        """JetStream mode: take no injuries while everything is paused or the breaker is open."""
        return self.controls.paused() is not None or self.breaker_open()

    def details(self) -> dict[str, Any]:
        """What the heartbeat says: the pause (who, why, since when) and the breaker."""
        return {**self.controls.details(), "repo": self.repo, "breaker_open": self.breaker_open()}

    async def run(self, slots: Any | None, *, heal: Heal, announce: Announce, owner: str) -> None:
        """Mirror the controls and carry out approvals; with `slots` (JetStream mode) also gate
        the intake."""
        tasks = [
            asyncio.create_task(self.controls.watch()),
            asyncio.create_task(self.carry_out_approvals(heal, announce, owner)),
        ]
        if slots is not None:
            await self.controls.synced.wait()  # a pause set before we started holds at once
            tasks.append(
                asyncio.create_task(gate_intake(slots, self.intake_closed, self.controls.changed))
            )
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


def _held(parsed: ParsedInjury, playbook: str, why: str, *, page: bool = False) -> Outcome:
    log.info("injury_held", reason=why, playbook=playbook)
    return Outcome(Kind.HELD, why, injury=parsed, playbook=playbook, page_held=page)


async def open_guard(
    settings: ControlSettings, js: Any | None, playbooks: Playbooks, *, repo: str, replicas: int = 1
) -> Guard:
    """The guard of a real replica: the controls bucket when the server has JetStream (KV);
    without it there is nothing to pause from and no shared count, and the log says so."""
    cells = None
    if js is not None:
        try:
            cells = await KvCell.open(js, BUCKET_CONTROLS, replicas=replicas)
        except Exception as exc:
            log.warning("controls_unavailable", error=str(exc) or type(exc).__name__)
    if settings.breaker_max_heals == 0:
        log.warning("breaker_off", detail="BREAKER_MAX_HEALS=0: no limit on heals per window")
    limits = breaker.Limits(
        settings.breaker_max_heals, settings.breaker_window_s, settings.breaker_manual_reset
    )
    return Guard(Controls(cells), playbooks, repo=repo, limits=limits)


def _store_failed(parsed: ParsedInjury, playbook: str, exc: TransientError) -> Outcome:
    """A control that could not read or write its store: retried later, an outage if it is one."""
    return Outcome(
        Kind.FAILED,
        str(exc),
        injury=parsed,
        playbook=playbook,
        retryable=True,
        store_unavailable=isinstance(exc, CoordinationUnavailable),
    )
