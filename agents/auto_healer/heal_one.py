"""One heal on its own (not in a batch): plan every step, apply, commit, push, say what happened.

`Healer._attempt` calls `plan_and_apply` with the path lock held and the checkout synced to
`base`; a push to the branch goes through the push racer (rebase on a teammate's push, never
`--force`), a heal branch is pushed as it is. Either push, cut off while under way (the agent
stops) and landed, is answered as if never cut off (`PushRacer._land`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from auto_healer.actions import StepContext, StepPlan, get_action
from auto_healer.checkout import Checkout
from auto_healer.contracts import ParsedInjury
from auto_healer.coordination import Lease
from auto_healer.outcomes import Kind, Outcome, StepReport
from auto_healer.playbooks import Playbook
from auto_healer.pushrace import Change, Race, landing
from auto_healer.pushrace import in_thread as _in_thread

if TYPE_CHECKING:
    from auto_healer.healer import Healer

log = structlog.get_logger("auto_healer.healer")


async def plan_and_apply(
    healer: Healer, parsed: ParsedInjury, playbook: Playbook, base: str, lease: Lease, race: Race
) -> Outcome:
    """Plan every step on the synced checkout, then apply, commit and push (or say why not)."""
    co = healer.checkout
    ctx = StepContext(injury=parsed, root=co.root, protected=playbook.protected_globs)
    plans: list[tuple[str, StepPlan]] = []
    for step in playbook.steps:
        plans.append((step.action, await get_action(step.action).plan(ctx, step.options)))
    early = healer.judge(parsed, playbook, plans, base)
    if early is not None:
        return early
    reports = tuple(StepReport(name, p.summary, tuple(p.files), p.diff) for name, p in plans)

    def done(kind: Kind, reason: str, **fields: Any) -> Outcome:
        return healer.outcome(parsed, playbook, kind, reason, steps=reports, **fields)

    message = playbook.commit_message(parsed)
    target = healer.target(parsed, playbook)
    for _, plan in plans:
        await _in_thread(co.apply, plan.delete, plan.write, playbook.protected_globs)
    if not await _in_thread(co.has_staged_changes):
        await _in_thread(co.restore, base)
        return done(
            Kind.SKIPPED,
            "only untracked files differed; removed them locally, nothing to commit",
        )
    sha = await _in_thread(co.commit, message, parsed.id)
    if target == co.branch:  # checked before every push: never push without the path lock
        change = [Change(tuple(d for _, p in plans for d in p.delete), _writes(plans))]
        sha = await healer._batcher.racer.push(race, base, change, lease.check)
    else:
        lease.check()
        pushed = await _push_heal_branch(co, target)
        await _in_thread(co.restore, base)  # the checkout stays on the healed branch's head
        if not pushed:
            return done(Kind.SKIPPED, f"already proposed on {target}", branch=target)
    return done(
        Kind.HEALED,
        f"pushed {sha[:12]} to {target}",
        commit=sha,
        branch=target,
        commit_message=message,
        attempts=race.lost,
    )


async def _push_heal_branch(co: Checkout, target: str) -> bool:
    """`co.push(target)`; cut off once it has landed, the heal goes on (`landing`)."""
    return await landing(lambda: co.push(target), "branch")


def _writes(plans: list[tuple[str, StepPlan]]) -> dict[str, bytes]:
    """Every file the plans write, with what they write."""
    return {path: data for _, p in plans for path, data in p.write.items()}
