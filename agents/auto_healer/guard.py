"""The operator controls in the pipeline: before a heal, the pause and the breaker are asked.

The agent hands each admitted injury to `Guard.handle()` with the healer's `handle` as `heal`.
An injury a playbook would heal is held while paused (everything or its playbook) or while the
repository's breaker is open; otherwise the breaker reserves its place, the heal runs, and a
place that did not heal is given back. Whatever no playbook heals goes straight on, so those
escalations still page while paused; an `auto_heal: false` injury a playbook could heal is
escalated as an approval request (even while paused): a human decides, the agent heals.
Approval requests are asked and carried out by `approval_flow`.

A held injury is an outcome (`Kind.HELD`); `decision.decide()` says what becomes of it. In
JetStream mode `run()` also closes the intake while paused or tripped (`controls.gate_intake`),
so waiting injuries stay in the stream and are not redelivered to death meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from auto_healer import approval_flow, breaker, recurrence
from auto_healer.approval_flow import Announce
from auto_healer.contracts import ParsedInjury
from auto_healer.controls import BREAKER_PREFIX, BUCKET_CONTROLS, Cells, Controls, gate_intake
from auto_healer.errors import CoordinationUnavailable, TransientError
from auto_healer.kvcell import KvCell
from auto_healer.kvstore import StoreHealth
from auto_healer.outcomes import Kind, Outcome, log_outcome
from auto_healer.playbooks import Playbook, Playbooks
from auto_healer.reservations import Reservations
from auto_healer.settings import ControlSettings

log = structlog.get_logger("auto_healer.guard")
Heal = approval_flow.HealOne


class Guard:
    """Holds injuries for the pause and the breaker; counts heals against the breaker."""

    def __init__(
        self,
        controls: Controls,
        playbooks: Playbooks,
        *,
        repo: str,
        limits: breaker.Limits,
        signing_key: bytes | None = None,
        reclaim_after_s: float = 900.0,
    ) -> None:
        self.controls, self.playbooks = controls, playbooks
        self.repo, self.limits = repo, limits
        self.desk = approval_flow.Desk(
            self, signing_key=signing_key, reclaim_after_s=reclaim_after_s
        )
        self._breaker_key = breaker.breaker_key(repo).removeprefix(BREAKER_PREFIX)
        self._reserving: set[tuple[str, str]] = set()  # problems holding a breaker place here
        # One compare-and-set on the breaker's one key at a time from this replica: a burst of
        # hundreds in flight would otherwise race each other past the retry bound.
        self._breaker_turn = asyncio.Lock()
        self._reservations = Reservations(self._breaker_turn)  # all waiting, in one turn

    async def handle(self, parsed: ParsedInjury, heal: Heal) -> Outcome:
        """The outcome of one admitted injury: held, or healed (or not) by `heal`."""
        playbook = self.playbooks.match(parsed.injury)
        if playbook is None:
            return await heal(parsed)
        if not playbook.adopt(parsed).injury.auto_heal:
            # A human decides, the agent does the work: asked even while paused (it pages), and
            # escalated as ever when no approval could let the playbook heal it.
            if self.controls.cells is None or not approval_flow.can_heal(parsed, playbook):
                return await heal(parsed)
            cells, asked = self.controls.cells, "auto_heal is false: a human must decide"
            return await approval_flow.ask(cells, parsed, playbook, asked, escalate=True)
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

    def _scopes(self, playbook: Playbook) -> list[tuple[str, breaker.Limits]]:
        """The breakers a heal of this playbook counts in: the repository's (unless off), and
        the playbook's own lower one (`breaker:` in the playbook), if it has one."""
        scopes = [(self.repo, self.limits)] if self.limits.max_heals else []
        own = playbook.breaker
        if own is not None:
            limits = breaker.Limits(own.max_heals, float(own.window_s), self.limits.manual_reset)
            scopes.append((breaker.scope(self.repo, playbook.name), limits))
        return scopes

    async def _counted(self, parsed: ParsedInjury, playbook: Playbook, heal: Heal) -> Outcome:
        """Heal within the breakers: reserve a place in each, give them back unless healed."""
        cells, scopes = self.controls.cells, self._scopes(playbook)
        problem = (parsed.injury.injury_type, parsed.problem)
        if cells is None or not scopes or problem in self._reserving:
            # The same problem already holds a place here: a storm of identical injuries heals
            # once (throttle, path lock, already healthy), so it is counted once, not tripped.
            return await heal(parsed)
        self._reserving.add(problem)
        try:
            return await self._within_breaker(parsed, playbook, heal, cells, scopes)
        finally:
            self._reserving.discard(problem)

    async def _within_breaker(
        self,
        parsed: ParsedInjury,
        playbook: Playbook,
        heal: Heal,
        cells: Cells,
        scopes: list[tuple[str, breaker.Limits]],
    ) -> Outcome:
        """Reserve a place for this heal in each breaker; hold the injury when one is open."""
        taken: list[str] = []
        held = None
        try:
            for scope, limits in scopes:
                # every heal waiting on this replica reserves in one compare-and-set
                verdict = await self._reservations.reserve(cells, scope, limits)
                if verdict is not breaker.Verdict.GO:
                    held = _breaker_held(parsed, playbook, self.repo, scope, limits, verdict)
                    break
                taken.append(scope)
        except TransientError as exc:
            held = _store_failed(parsed, playbook.name, exc)
        if held is not None:
            with contextlib.suppress(Exception):
                await self._release(cells, taken)
            return held
        healed = False
        try:
            outcome = await heal(parsed)
            healed = outcome.pushed  # a push the remote head does not show changed it too
            return outcome
        finally:
            if not healed:  # also when cut off by shutdown: its redelivery reserves again
                with contextlib.suppress(Exception):  # at worst the window counts one too many
                    await asyncio.shield(self._release(cells, taken))

    async def _release(self, cells: Cells, scopes: list[str]) -> None:
        async with self._breaker_turn:
            for scope in scopes:
                await breaker.release(cells, scope)

    async def _ask(self, parsed: ParsedInjury, playbook: Playbook, because: str = "") -> Outcome:
        """Keep the injury as a pending approval request (see `approval_flow.ask`)."""
        cells = self.controls.cells
        if cells is None:
            why = "the playbook needs approval, and approvals need JetStream KV on the server"
            return Outcome(Kind.ESCALATED, why, injury=parsed, playbook=playbook.name)
        return await approval_flow.ask(cells, parsed, playbook, because)

    async def heal_counted(self, parsed: ParsedInjury, playbook: Playbook, heal: Heal) -> Outcome:
        """Heal within the breaker, and count it for the recurrence (an approved heal)."""
        return await self._recorded(parsed, playbook, await self._counted(parsed, playbook, heal))

    def held(self, playbook: Playbook) -> bool:
        """Whether a pause or an open breaker keeps this playbook's heals waiting now."""
        if self.controls.paused(playbook.name) is not None:
            return True
        return any(self._open(scope, limits) for scope, limits in self._scopes(playbook))

    def _open(self, scope: str, limits: breaker.Limits) -> bool:
        key = breaker.breaker_key(scope).removeprefix(BREAKER_PREFIX)
        return breaker.is_open(self.controls.breakers.get(key), limits)

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

    async def run(
        self, slots: Any | None, *, heal: approval_flow.Heal, announce: Announce, owner: str
    ) -> None:
        """Mirror the controls and carry out approvals; with `slots` (JetStream mode: the
        intake's gate) also close the intake while paused or tripped."""
        tasks = [
            asyncio.create_task(self.controls.watch()),
            asyncio.create_task(self.desk.run(heal, announce, owner)),
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


def _breaker_held(
    parsed: ParsedInjury,
    playbook: Playbook,
    repo: str,
    scope: str,
    limits: breaker.Limits,
    verdict: breaker.Verdict,
) -> Outcome:
    """Held by an open breaker; the heal that tripped it carries the one page."""
    which, reset = "", repo
    if scope != repo:
        which, reset = f" of playbook {playbook.name}", f"{repo} --playbook {playbook.name}"
    why = (
        f"blast-radius breaker{which} open on {repo}: more than {limits.max_heals} heals within "
        f"{limits.window_s:g} s; held until `auto-healer reset-breaker {reset}`"
        + ("" if limits.manual_reset else " or the window ends")
    )
    if verdict is breaker.Verdict.TRIPPED:
        log.error("breaker_tripped", repo=repo, scope=scope, max_heals=limits.max_heals)
    return _held(parsed, playbook.name, why, page=verdict is breaker.Verdict.TRIPPED)


def _held(parsed: ParsedInjury, playbook: str, why: str, *, page: bool = False) -> Outcome:
    log.info("injury_held", reason=why, playbook=playbook)
    return Outcome(Kind.HELD, why, injury=parsed, playbook=playbook, page_held=page)


async def open_guard(
    settings: ControlSettings,
    js: Any | None,
    playbooks: Playbooks,
    *,
    repo: str,
    replicas: int = 1,
    signing_key: bytes | None = None,
    health: StoreHealth | None = None,
) -> Guard:
    """The guard of a real replica: the controls bucket when the server has JetStream (KV);
    without it there is nothing to pause from and no shared count, and the log says so."""
    cells = None
    if js is not None:
        try:
            cells = await KvCell.open(js, BUCKET_CONTROLS, replicas=replicas, health=health)
        except Exception as exc:
            log.warning("controls_unavailable", error=str(exc) or type(exc).__name__)
    if settings.breaker_max_heals == 0:
        log.warning("breaker_off", detail="BREAKER_MAX_HEALS=0: no limit on heals per window")
    limits = breaker.Limits(
        settings.breaker_max_heals, settings.breaker_window_s, settings.breaker_manual_reset
    )
    return Guard(
        Controls(cells),
        playbooks,
        repo=repo,
        limits=limits,
        signing_key=signing_key,
        reclaim_after_s=settings.approval_reclaim_after_s,
    )


def _store_failed(parsed: ParsedInjury, playbook: str, exc: TransientError) -> Outcome:
    """A control that could not read or write its store: retried later, an outage if it is one.
    Logged here: it never reaches the healer, which logs the others."""
    outcome = Outcome(
        Kind.FAILED,
        str(exc),
        injury=parsed,
        playbook=playbook,
        retryable=True,
        store_unavailable=isinstance(exc, CoordinationUnavailable),
    )
    log_outcome(outcome, dry_run=False)
    return outcome
