"""The parts of a batch heal that need no git: an injury of a batch, its plan, what may be
planned ahead of its apply, the commit message of a batch, the outcome of a second delivery
within a batch, waiting out a sync started ahead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from auto_healer.actions import StepContext, StepPlan, get_action, planner_now
from auto_healer.checkout import Checkout
from auto_healer.contracts import ParsedInjury
from auto_healer.errors import ConfigError, HealFailed, InjuryRejected, TransientError
from auto_healer.outcomes import Kind, Outcome, StepReport
from auto_healer.paths import with_parents
from auto_healer.playbooks import Playbook


@dataclass(eq=False)
class Item:
    """One injury waiting in, or healed by, a batch."""

    parsed: ParsedInjury
    playbook: Playbook
    lock_key: str
    future: asyncio.Future[Outcome]
    reports: tuple[StepReport, ...] = ()
    delete: list[str] = field(default_factory=list)
    write: dict[str, bytes] = field(default_factory=dict)
    files: int = 0
    window: str | None = None  # its throttle window's key, claimed under its path lock


class Planned(Protocol):
    """An injury of a batch with its plan's deletions."""

    parsed: ParsedInjury
    playbook: Playbook
    delete: list[str]


P = TypeVar("P", bound=Planned)


class Ahead(Generic[P]):
    """Deletions planned ahead of their apply. The next injury may be planned before they are
    applied only when its plan cannot see them: its actions plan in line (`PlansNow`: a few
    `lstat`s on its own path and the directories above it) and no deletion is at, above or
    below its path. Planning a run of them on one checkout generation keeps confinement's
    cache (which every apply clears) answering: a burst of deletions is planned by dict hits."""

    def __init__(self) -> None:
        self.items: list[P] = []
        self._deleted: set[str] = set()  # the paths the planned deletions remove
        self._above: set[str] = set()  # those paths and every directory above them

    def apart(self, it: P) -> bool:
        path = it.parsed.path
        if path is None or path == "." or not all(plans_now(s.action) for s in it.playbook.steps):
            return False
        if path in self._above:
            return False
        return not any(p in self._deleted for p in self_and_above(path))

    def add(self, it: P) -> None:
        self.items.append(it)
        for d in it.delete:
            self._deleted.add(d)
            self._above.update(self_and_above(d))

    def take(self) -> list[P]:
        taken, self.items = self.items, []
        self._deleted, self._above = set(), set()
        return taken


def self_and_above(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def plans_now(action: str) -> bool:
    try:
        return planner_now(action) is not None
    except ConfigError:
        return False


def batch_message(messages: list[str]) -> str:
    """The commit message of a batch: a single heal's own message, or a summary line and one
    body line per injury (the trailers are added by `Checkout.commit`)."""
    if len(messages) == 1:
        return messages[0]
    body = "\n".join(f"- {m.strip().partition(chr(10))[0]}" for m in messages)
    return f"auto-heal: {len(messages)} injuries\n\n{body}"


def as_twin(first: Outcome, parsed: ParsedInjury) -> Outcome:
    """The outcome of a second delivery of an injury healed (or not) earlier in the batch."""
    if first.kind is Kind.HEALED and first.commit:
        reason = f"already healed by commit {first.commit[:12]}"
        return replace(first, kind=Kind.SKIPPED, reason=reason, injury=parsed)
    return replace(first, injury=parsed)


async def waited_out(task: asyncio.Future[str]) -> None:
    """The sync's thread has ended before the checkout is let go (its error, unused when no
    injury was left to heal, is dropped)."""
    if not task.done():
        await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


async def plan(it: Item, root: Path, out: Callable[..., Outcome]) -> Outcome | None:
    """Plan every step of one injury on the checkout at `root` as it now is; an outcome (made
    by `out(item, kind, reason, ...)`) when the injury is left out of the batch."""
    ctx = StepContext(injury=it.parsed, root=root, protected=it.playbook.protected_globs)
    plans: list[tuple[str, StepPlan]] = []
    try:
        for step in it.playbook.steps:
            plans.append((step.action, await get_action(step.action).plan(ctx, step.options)))
    except InjuryRejected as exc:
        return out(it, Kind.REJECTED, str(exc))
    except TransientError as exc:
        return out(it, Kind.FAILED, str(exc), retryable=True)
    except (HealFailed, ConfigError) as exc:
        return out(it, Kind.FAILED, str(exc))
    it.reports = tuple(StepReport(n, p.summary, tuple(p.files), p.diff) for n, p in plans)
    escalate = next((p.escalate for _, p in plans if p.escalate), None)
    if escalate:
        return out(it, Kind.ESCALATED, escalate)
    if all(p.noop for _, p in plans):
        why = "; ".join(p.summary for _, p in plans)
        return out(it, Kind.SKIPPED, f"already healthy: {why}")
    it.delete = [d for _, p in plans for d in p.delete]
    it.write = {path: data for _, p in plans for path, data in p.write.items()}
    it.files = max(1, sum(len(p.files) for _, p in plans))
    return None


def stage_and_commit(
    co: Checkout, included: list[Item], skipped: list[Item]
) -> tuple[str | None, list[Item], list[str]]:
    """Stage a batch, find the injuries that changed tracked files, commit them (None when
    none did), with each one's commit message; the others go into `skipped` before the
    commit. Run in one thread call, as each hop back to the event loop between git
    processes waits behind every callback queued there (the next batch's KV answers),
    ~25 ms a hop in a burst."""
    writes = dict.fromkeys(w for it in included for w in it.write)
    co.stage([d for it in included for d in it.delete], list(writes))
    changed = with_parents(co.staged_paths())
    committed: list[Item] = []
    for it in included:
        hit = any(p in changed for p in (*it.delete, *it.write))
        (committed if hit else skipped).append(it)
    if not committed:
        return None, [], []
    messages = [it.playbook.commit_message(it.parsed) for it in committed]
    sha = co.commit(batch_message(messages), *(it.parsed.id for it in committed))
    return sha, committed, messages
