"""The heal pipeline: injury → playbook → actions (plan) → checkout (apply, commit, push) → outcome.

`Healer.handle()` is the single code path used by the one-shot CLI and the NATS agent alike.
It never raises for a bad injury or a failed heal: it returns an `Outcome`, and `outcomes`
decides what follows. Transient failures are retried with tenacity, re-applying the heal on the
new remote head each time; a push race is won by `pushrace` (rebase, re-check, push again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, retry_if_not_exception_type

from auto_healer.actions import StepPlan
from auto_healer.batch import Batcher
from auto_healer.batch_throttle import KEPT, known_holder, throttled
from auto_healer.checkout import Checkout
from auto_healer.contracts import FREE_TEXT, ParsedInjury
from auto_healer.coordination import Coordinator, Lease, LocalCoordinator
from auto_healer.errors import (
    ConfigError,
    CoordinationUnavailable,
    HealFailed,
    InjuryRejected,
    TransientError,
)
from auto_healer.gitfail import safe_ref
from auto_healer.heal_one import plan_and_apply
from auto_healer.logs import bound, redact_url
from auto_healer.outcomes import Kind, Outcome, StepReport, log_outcome
from auto_healer.paths import first_protected
from auto_healer.playbooks import Playbook, Playbooks
from auto_healer.pushrace import PushRaceLost, Replan
from auto_healer.pushrace import in_thread as _in_thread
from auto_healer.verification import HealVerifier

log = structlog.get_logger("auto_healer.healer")


class Healer:
    """Heals injuries on one checkout, one at a time, following the playbooks."""

    def __init__(
        self,
        playbooks: Playbooks,
        checkout: Checkout,
        *,
        dry_run: bool,
        coordinator: Coordinator | None = None,
        max_batch: int = 200,
        max_batch_files: int = 20_000,
    ) -> None:
        self.playbooks = playbooks
        self.checkout = checkout
        self.dry_run = dry_run
        self.coordinator: Coordinator = coordinator or LocalCoordinator()
        self._lock = asyncio.Lock()  # never two heals on one checkout at once
        self.repo_key = repo_key(checkout)
        self._head_cache: tuple[float, str] | None = None
        self.max_batch = max_batch
        self._verifier = HealVerifier(checkout)  # after each push: does the remote head show it?
        self._batcher = Batcher(
            checkout,
            self.coordinator,
            self._lock,
            self.outcome,
            lambda it, outcome: self.settle(it.playbook, outcome),
            max_batch=max_batch,
            max_files=max_batch_files,
        )

    async def handle(self, parsed: ParsedInjury, *, approved: bool = False) -> Outcome:
        """Decide and carry out the heal of one valid injury; always returns an outcome.
        `approved`: a human approved this heal (see `approvals`), `auto_heal: false` or not."""
        with bound(injury_id=parsed.id):
            outcome = await self._handle(parsed, approved)
            log_outcome(outcome, dry_run=self.dry_run)
            return outcome

    def claimed(self, parsed: ParsedInjury) -> tuple[ParsedInjury, Playbook | None]:
        """The playbook that claims the injury (None: none does), and the injury as it adopts it."""
        playbook = self.playbooks.match(parsed.injury)
        return (playbook.adopt(parsed) if playbook is not None else parsed), playbook

    def unclaimed(
        self, parsed: ParsedInjury, playbook: Playbook | None, *, approved: bool = False
    ) -> Outcome | None:
        """The escalation of an injury no playbook heals (none claims it, or not auto_heal and
        not `approved` by a human)."""
        injury = parsed.injury
        if playbook is None:
            why = (
                "no playbook claims this free-text injury: a human must read it"
                if injury.injury_type == FREE_TEXT
                else f"no playbook matches injury_type {injury.injury_type!r}"
            )
            return self.outcome(parsed, None, Kind.ESCALATED, why)
        if not injury.auto_heal and not approved:
            why = playbook.escalation_reason() or "auto_heal is false: a human must decide"
            return self.outcome(parsed, playbook, Kind.ESCALATED, why)
        return None

    def refused(self, parsed: ParsedInjury, playbook: Playbook) -> Outcome | None:
        """A malformed or protected path refused up front (the actions check again, fully)."""
        path = parsed.path
        if path is None:
            why = parsed.path_error or "affected_path is unsafe"
        else:
            hit = first_protected(path, playbook.protected_globs) if path != "." else None
            if not hit:
                return None
            why = f"affected_path {parsed.injury.affected_path!r} is protected by {hit!r}"
        return self.outcome(parsed, playbook, Kind.REJECTED, why)

    async def _handle(self, parsed: ParsedInjury, approved: bool) -> Outcome:
        parsed, playbook = self.claimed(parsed)
        early = self.unclaimed(parsed, playbook, approved=approved)
        if early is not None:
            return early
        assert playbook is not None  # `unclaimed` answers an injury no playbook claims
        early = self.refused(parsed, playbook)
        if early is not None:
            return early
        try:
            return await self._coordinated(parsed, playbook)
        except TransientError as exc:
            return self.outcome(
                parsed,
                playbook,
                Kind.FAILED,
                str(exc),
                retryable=True,
                store_unavailable=isinstance(exc, CoordinationUnavailable),
            )

    async def _coordinated(self, parsed: ParsedInjury, playbook: Playbook) -> Outcome:
        """Dedup by id, throttle storms, then heal; the store's failures are transient."""
        injury, coord = parsed.injury, self.coordinator
        lock_key = f"{self.repo_key}|{_path(parsed)}"
        window = f"{self.repo_key}|{injury.injury_type}|{_path(parsed)}"
        throttle = playbook.throttle
        if not self.dry_run and playbook.batches and self.max_batch > 1:
            # The batch reads the healed id under the path lock (the read that decides), then
            # claims the window (`batch_throttle`): a healed injury redelivered never claims
            # it. Here only what this replica knows, with no round trip, for a storm.
            if throttle and known_holder(coord, window) not in (None, parsed.id):
                return self._throttled(parsed, playbook, throttle.window_s)
            claims = window if throttle else None
            return await self._batcher.heal(parsed, playbook, lock_key, claims)
        # Alone: the read, then the claim at intake, so a storm never queues for the locks.
        healed = await self._already_healed(parsed, playbook)
        if healed:
            return healed
        if throttle and not await coord.claim_window(window, throttle.window_s, parsed.id):
            return self._throttled(parsed, playbook, throttle.window_s)
        outcome = await self._heal(parsed, playbook, lock_key)
        if throttle and outcome.kind not in KEPT:
            try:
                await coord.release_window(window, parsed.id)  # a failed heal: its retry is free
            except TransientError as exc:  # the heal itself is done; only bookkeeping was lost
                log.warning("coordination_bookkeeping_failed", error=str(exc))
        return outcome

    def _throttled(self, parsed: ParsedInjury, playbook: Playbook, window_s: float) -> Outcome:
        return self.outcome(parsed, playbook, Kind.SKIPPED, throttled(parsed, window_s))

    async def settle(self, playbook: Playbook, outcome: Outcome) -> Outcome:
        """A pushed heal verified on the remote and, if it holds, its healed id recorded: done
        while its path lock is still held, so the next holder's healed-id read sees it."""
        outcome = await self._verifier.check(playbook, outcome)
        if outcome.kind is Kind.HEALED and outcome.commit and outcome.injury is not None:
            try:
                await self.coordinator.mark_healed(outcome.injury.id, outcome.commit)
            except TransientError as exc:  # the heal itself is done; only bookkeeping was lost
                log.warning("coordination_bookkeeping_failed", error=str(exc))
        return outcome

    async def _already_healed(self, parsed: ParsedInjury, playbook: Playbook) -> Outcome | None:
        commit = await self.coordinator.healed_commit(parsed.id)
        if not commit:
            return None
        reason = f"already healed by commit {commit[:12]}"
        return self.outcome(parsed, playbook, Kind.SKIPPED, reason, commit=commit)

    @asynccontextmanager
    async def _locks(self, lock_key: str) -> AsyncIterator[Lease]:
        """The path lock and the checkout. Beside batches (real mode, MAX_BATCH > 1) the path
        lock first, as a batch takes them (`batch_queue`): the other order could deadlock with
        a batch holding the path while it waits for the checkout. Else the checkout first, so a
        busy replica holds no KV locks for the heals queued behind it."""
        if not self.dry_run and self.max_batch > 1:
            async with self.coordinator.path_lock(lock_key) as lease, self._lock:
                yield lease
        else:
            async with self._lock, self.coordinator.path_lock(lock_key) as lease:
                yield lease

    async def _heal(self, parsed: ParsedInjury, playbook: Playbook, lock_key: str) -> Outcome:
        """Run the playbook under the path lock, retrying transient failures."""
        attempts = 0
        try:
            async with self._locks(lock_key) as lease:
                healed = await self._already_healed(parsed, playbook)
                if healed:  # by another delivery while this one waited for the locks
                    return healed
                async for attempt in self._retrying(playbook):
                    with attempt:
                        attempts = attempt.retry_state.attempt_number
                        outcome = await self._attempt(parsed, playbook, lease)
                outcome = replace(outcome, attempts=attempts + outcome.attempts)  # + pushes lost
                return await self.settle(playbook, outcome)
        except InjuryRejected as exc:
            return self.outcome(parsed, playbook, Kind.REJECTED, str(exc), attempts=attempts)
        except TransientError as exc:
            return self.outcome(
                parsed,
                playbook,
                Kind.FAILED,
                f"{exc} (after {attempts} attempts)",
                attempts=attempts,
                retryable=True,
                store_unavailable=isinstance(exc, CoordinationUnavailable),
            )
        except (HealFailed, ConfigError) as exc:
            return self.outcome(parsed, playbook, Kind.FAILED, str(exc), attempts=attempts)
        except Exception as exc:  # a bug must not kill the agent; it is reported and paged
            log.exception("heal_internal_error")
            return self.outcome(
                parsed,
                playbook,
                Kind.FAILED,
                f"internal error: {type(exc).__name__}: {exc}",
                attempts=attempts,
            )

    def outcome(
        self,
        parsed: ParsedInjury,
        playbook: Playbook | None,
        kind: Kind,
        reason: str,
        **fields: Any,
    ) -> Outcome:
        """An outcome for this injury, carrying the playbook's failure policy."""
        return Outcome(
            kind,
            reason,
            injury=parsed,
            dry_run=self.dry_run,
            playbook=playbook.name if playbook else None,
            page_on_failure=playbook is None or playbook.on_failure == "escalate",
            **fields,
        )

    @staticmethod
    def _retrying(playbook: Playbook) -> AsyncRetrying:
        return playbook.retry.retrying(
            retry_if_exception_type(TransientError) & retry_if_not_exception_type(PushRaceLost),
            before_sleep=lambda rs: log.warning(
                "heal_retry",
                attempt=rs.attempt_number,
                error=str(rs.outcome.exception()) if rs.outcome else None,
            ),
        )

    def dry_head(self) -> str:
        """The commit a dry-run plans against, re-read at most once a second (it is only shown,
        and reading refs through GitPython costs more than the rest of a dry-run plan)."""
        now = time.monotonic()
        if self._head_cache is None or now - self._head_cache[0] > 1.0:
            self._head_cache = (now, self.checkout.head())
        return self._head_cache[1]

    async def _attempt(self, parsed: ParsedInjury, playbook: Playbook, lease: Lease) -> Outcome:
        """One try: sync, plan every step, then apply, commit and push (unless dry-run)."""
        co = self.checkout
        # A dry-run plans against a user's checkout as it is (no fetch, no reset); only the
        # agent's own clone (from --repo-url) is brought to the remote head first.
        dry_as_is = self.dry_run and not co.owned
        race = self._batcher.racer.start()
        while True:  # planned again on the remote's new head while the push race asks for it
            base = self.dry_head() if dry_as_is else await _in_thread(co.sync)
            try:
                return await plan_and_apply(self, parsed, playbook, base, lease, race)
            except Replan as why:
                await _in_thread(co.restore, base)
                race.replan(why)
            except BaseException:
                if not dry_as_is:
                    await _in_thread(co.restore, base)
                raise

    def target(self, parsed: ParsedInjury, playbook: Playbook) -> str:
        """Where the heal is pushed: the branch, or a heal branch of its own."""
        branch = playbook.commit.push_to == "branch"
        return self.checkout.branch if branch else f"auto-heal/{safe_ref(parsed.id)}"

    def judge(
        self,
        parsed: ParsedInjury,
        playbook: Playbook,
        plans: list[tuple[str, StepPlan]],
        base: str,
        attempts: int = 0,
    ) -> Outcome | None:
        """The plans' outcome if nothing is to be applied (escalated, healthy, dry-run), or None."""
        reports = tuple(StepReport(name, p.summary, tuple(p.files), p.diff) for name, p in plans)

        def done(kind: Kind, reason: str, **fields: Any) -> Outcome:
            return self.outcome(
                parsed, playbook, kind, reason, steps=reports, attempts=attempts, **fields
            )

        escalate = next((p.escalate for _, p in plans if p.escalate), None)
        if escalate:
            return done(Kind.ESCALATED, escalate)
        if all(p.noop for _, p in plans):
            why = "; ".join(p.summary for _, p in plans)
            return done(Kind.SKIPPED, f"already healthy: {why}")
        if not self.dry_run:
            return None
        target = self.target(parsed, playbook)
        return done(
            Kind.PLANNED,
            f"would commit on {base[:12]} and push to {target}",
            commit_message=playbook.commit_message(parsed),
            branch=target,
        )


def repo_key(checkout: Checkout) -> str:
    """What identifies the repository across replicas: its remote URL, credentials removed."""
    try:
        url = str(checkout.repo.remotes[checkout.remote].url)
    except (IndexError, ValueError):
        return str(checkout.root)
    return redact_url(url)


def _path(parsed: ParsedInjury) -> str:
    """The affected path in normal form, so `./a//b/` and `a/b` are one key (after precheck)."""
    return parsed.path or parsed.injury.affected_path
