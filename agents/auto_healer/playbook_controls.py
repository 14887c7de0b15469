"""The playbook's operator controls: storm throttle, approval, recurrence and its breaker.

Each is one optional key of a playbook (see `playbooks`); what they do is in `guard`,
`approvals`, `recurrence` and `breaker`.
"""

from __future__ import annotations

from pydantic import Field

from auto_healer.playbook_match import Strict


class Throttle(Strict):
    """Heal one injury_type + affected_path at most once per window (storm control)."""

    window_s: float = Field(gt=0, le=7 * 86400)


class Approval(Strict):
    """A human approves each heal first (`approval: required` is short for `{required: true}`);
    a request not decided within `expires_s` is escalated."""

    required: bool = True
    expires_s: float = Field(default=86400.0, gt=0, le=30 * 86400)


class Recurrence(Strict):
    """Stop auto-healing a problem healed `max_heals` times within `window_s` that came back:
    a human approves its next heal (the fix does not hold)."""

    max_heals: int = Field(default=3, ge=1, le=1000)
    window_s: float = Field(default=86400.0, gt=0, le=30 * 86400)


class Breaker(Strict):
    """A lower blast-radius limit for this playbook's heals: at most `max_heals` of them per
    `window_s` on a repository, counted apart and within BREAKER_MAX_HEALS (never above it)."""

    max_heals: int = Field(gt=0, le=1_000_000, strict=True)
    window_s: int = Field(gt=0, le=30 * 86400, strict=True)
