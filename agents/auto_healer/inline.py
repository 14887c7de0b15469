"""Outcomes reached without waiting: the agent's batch path asks here first.

Most of a burst needs no checkout work: no playbook claims the injury, it is not `auto_heal`,
its path is refused, or (a dry-run on a checkout taken as it is) its plan is a few `lstat`s.
`outcome_now` answers those in line with the outcome `Healer.handle` would give, through the
same checks in the same order; everything else (a heal, a plan that waits, the operator
controls to ask, a shared store, a path a heal holds) gets None and goes the whole way.
"""

from __future__ import annotations

from typing import Any

from auto_healer.actions import ActionOptions, PlansNow, StepContext, StepPlan, planner_now
from auto_healer.contracts import ParsedInjury
from auto_healer.coordination import LocalCoordinator
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome, log_outcome
from auto_healer.playbooks import Playbook

# per playbook (kept alive beside its planners, so its id is not reused): each step's action
# name, planner and options, or None when a step must wait
Planners = list[tuple[str, PlansNow[Any], ActionOptions]]
_PLANNERS: dict[int, tuple[Playbook, Planners | None]] = {}


def outcome_now(healer: Healer, parsed: ParsedInjury, *, guarded: bool) -> Outcome | None:
    """The outcome of one admitted injury if it is known without waiting, else None.

    `guarded`: the operator controls are asked first about every claimed injury (a real
    replica; an `auto_heal: false` one a playbook could heal becomes an approval request), so
    only what they never see is answered here: an injury no playbook claims.
    """
    parsed, playbook = healer.claimed(parsed)
    if guarded and playbook is not None:
        return None  # the controls see it first: a claimed `auto_heal: false` may be approved
    outcome = healer.unclaimed(parsed, playbook)
    if outcome is None and playbook is not None and not guarded:
        outcome = healer.refused(parsed, playbook) or _planned(healer, parsed, playbook)
    if outcome is not None:
        log_outcome(outcome, dry_run=healer.dry_run)
    return outcome


def _planned(healer: Healer, parsed: ParsedInjury, playbook: Playbook) -> Outcome | None:
    """A dry-run's plan on a checkout as it is, when every step plans without waiting."""
    coord, co = healer.coordinator, healer.checkout
    if not healer.dry_run or co.owned or not isinstance(coord, LocalCoordinator):
        return None
    planners = _planners(playbook)
    path = parsed.path or parsed.injury.affected_path
    if planners is None or coord.lock_busy(f"{healer.repo_key}|{path}"):
        return None
    if coord.healed_now(parsed.id):
        return None  # the whole way says so, in its words
    window = f"{healer.repo_key}|{parsed.injury.injury_type}|{path}"
    throttle = playbook.throttle
    if throttle:  # `claim_window`, in line
        if coord.window_holder(window) not in (None, parsed.id):
            return None
        coord.record_window(window, throttle.window_s, parsed.id)
    try:
        ctx = StepContext(injury=parsed, root=co.root, protected=playbook.protected_globs)
        plans: list[tuple[str, StepPlan]] = [
            (name, planner.plan_now(ctx, options)) for name, planner, options in planners
        ]
        outcome = healer.judge(parsed, playbook, plans, healer.dry_head(), attempts=1)
    except InjuryRejected as exc:
        outcome = healer.outcome(parsed, playbook, Kind.REJECTED, str(exc), attempts=1)
    except Exception:  # the whole way tries again and reports it as it does
        outcome = None
    if throttle and (outcome is None or outcome.kind not in (Kind.PLANNED, Kind.SKIPPED)):
        coord.record_window(window, 0.0, parsed.id)  # released: it must not throttle a retry
    return outcome


def _planners(playbook: Playbook) -> Planners | None:
    cached = _PLANNERS.get(id(playbook))
    if cached is not None and cached[0] is playbook:
        return cached[1]
    found: Planners = []
    try:
        for step in playbook.steps:
            planner = planner_now(step.action)
            if planner is not None:
                found.append((step.action, planner, step.options))
    except ConfigError:  # an unknown action: the whole way reports it
        found = []
    planners = found if len(found) == len(playbook.steps) and found else None
    _PLANNERS[id(playbook)] = (playbook, planners)
    return planners
