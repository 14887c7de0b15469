"""The read that decides a batch's injuries, under their path locks: healed ids, then windows.

An injury healed already (a redelivery) is answered "already healed" and claims no throttle
window: claimed at intake, it would hold its path's window for `window_s`, and a genuinely new
injury there would be answered "throttled" and never healed. The others claim their window
(`Coordinator.claim_window`) only now: the first of a batch on a window wins, the others on it
are "throttled", each with its own outcome. Claims on one window run one after another (the
next distinct claimant is answered by the cache its predecessor filled, without a round trip);
claims on different windows run together. A batch holds at most one claimant per window, and
two batches on one path never overlap (the path lock), so two claims of a window never race
here. A claimed window whose heal does not hold is let go (`let_go_failed`) before the path
locks are, so the next heal on the path is not throttled by a heal that did not happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

import structlog

from auto_healer.batch_ahead import Item
from auto_healer.contracts import ParsedInjury
from auto_healer.coordination import Coordinator, KvCoordinator, LocalCoordinator
from auto_healer.errors import CoordinationUnavailable, TransientError
from auto_healer.outcomes import Kind, Outcome

log = structlog.get_logger("auto_healer.healer")
Out = Callable[..., Outcome]  # `Batcher._out`: (item, kind, reason, **fields)
KEPT = (Kind.HEALED, Kind.PLANNED, Kind.SKIPPED)  # a window claimed for these is kept


def throttled(parsed: ParsedInjury, window_s: float) -> str:
    """Why an injury is not healed: another on its window was, within `window_s`."""
    injury = parsed.injury
    return (
        f"throttled: {injury.injury_type} at {injury.affected_path} was "
        f"handled within the last {window_s:g}s"
    )


def known_holder(coordinator: Coordinator, window: str) -> str | None:
    """Who holds `window` as far as this replica knows, without asking the store: the check
    `claim_window` begins with (a claim or a claimant seen within the last second)."""
    if isinstance(coordinator, KvCoordinator):
        return coordinator.local.window_holder(window)
    if isinstance(coordinator, LocalCoordinator):
        return coordinator.window_holder(window)
    return None


async def decide(
    coordinator: Coordinator, items: list[Item], out: Out
) -> tuple[dict[Item, Outcome], list[Item]]:
    """The outcomes of the injuries healed already, throttled, or whose store failed; and the
    items that claimed their window in doing so (the rest are healed)."""
    groups: dict[str | None, list[Item]] = {}  # by window (None: not throttled)
    for it in items:
        groups.setdefault(it.window, []).append(it)
    decided = await asyncio.gather(*(_group(coordinator, g, out) for g in groups.values()))
    outcomes: dict[Item, Outcome] = {}
    held: list[Item] = []
    for done, claimed in decided:
        outcomes.update(done)
        held += claimed
    return outcomes, held


async def _group(
    coordinator: Coordinator, items: list[Item], out: Out
) -> tuple[dict[Item, Outcome], list[Item]]:
    """One window's injuries (or those without a window): read, then claim in order."""
    read = coordinator.healed_commit
    try:
        if len(items) == 1:  # a burst on distinct paths: no task more for each
            commits = [await read(items[0].parsed.id)]
        else:
            commits = list(await asyncio.gather(*(read(it.parsed.id) for it in items)))
    except TransientError as exc:
        return {it: _failed(it, exc, out) for it in items}, []
    outcomes: dict[Item, Outcome] = {}
    fresh: list[Item] = []
    for it, commit in zip(items, commits, strict=True):
        if commit:
            reason = f"already healed by commit {commit[:12]}"
            outcomes[it] = out(it, Kind.SKIPPED, reason, commit=commit)
        else:
            fresh.append(it)
    held: list[Item] = []
    won: dict[str, bool] = {}  # claimant -> its answer (a second delivery asks no more)
    for it in fresh:
        throttle = it.playbook.throttle
        if it.window is None or throttle is None:
            continue
        claimant = it.parsed.id
        if claimant not in won:
            try:
                won[claimant] = await coordinator.claim_window(
                    it.window, throttle.window_s, claimant
                )
            except TransientError as exc:
                outcomes[it] = _failed(it, exc, out)
                continue
        if won[claimant]:
            held.append(it)
        else:
            outcomes[it] = out(it, Kind.SKIPPED, throttled(it.parsed, throttle.window_s))
    return outcomes, held


async def let_go_failed(
    coordinator: Coordinator, held: Iterable[Item], outcomes: Mapping[Item, Outcome]
) -> None:
    """Let go of the windows claimed for heals that did not hold (failed, rejected,
    escalated): a retry, or a new injury on the path, must not be throttled by them. An
    item handed back to the queue (no outcome yet) keeps its window: it claims it again."""
    windows = {
        (it.window, it.parsed.id)
        for it in held
        if it.window is not None and it in outcomes and outcomes[it].kind not in KEPT
    }
    if windows:
        await asyncio.gather(*(_let_go(coordinator, w, claimant) for w, claimant in windows))


async def _let_go(coordinator: Coordinator, window: str, claimant: str) -> None:
    try:
        await coordinator.release_window(window, claimant)
    except TransientError as exc:  # the heal itself is done; only bookkeeping was lost
        log.warning("coordination_bookkeeping_failed", error=str(exc))


def _failed(it: Item, exc: TransientError, out: Out) -> Outcome:
    unavailable = isinstance(exc, CoordinationUnavailable)
    return out(it, Kind.FAILED, str(exc), retryable=True, store_unavailable=unavailable)
