"""`escalate`: a step that heals nothing and hands the injury to a human, with a reason."""

from __future__ import annotations

from pydantic import Field

from auto_healer.actions import ActionOptions, StepContext, StepPlan, VerifyContext, register


class EscalateOptions(ActionOptions):
    """Options of `escalate`."""

    reason: str = Field(default="the playbook says a human must handle this", min_length=1)


@register
class Escalate:
    """Always escalate: for injuries that must never be healed automatically."""

    name = "escalate"
    options_model = EscalateOptions

    async def plan(self, ctx: StepContext, options: EscalateOptions) -> StepPlan:
        return self.plan_now(ctx, options)

    def plan_now(self, ctx: StepContext, options: EscalateOptions) -> StepPlan:
        return StepPlan(summary=f"escalate: {options.reason}", escalate=options.reason)

    async def verify(self, ctx: VerifyContext, options: EscalateOptions) -> str | None:
        return None  # it changes nothing, so there is nothing to see on the remote
