"""The one-shot heal (`auto-healer heal`): heal a file of injuries on one checkout, page what
must be paged, print the report, and tell whether everything went well."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from auto_healer.admission import Gate, Rejection
from auto_healer.checkout import open_checkout
from auto_healer.decision import Context, Decision, decide, exit_ok
from auto_healer.errors import ConfigError
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks
from auto_healer.report import Format, render, summary
from auto_healer.settings import Settings
from auto_healer.sources import Delivery
from auto_healer.terminal import print_report, progress

if TYPE_CHECKING:
    from auto_healer.pager import Pager, PageResult

WINDOW = 1000  # entries healed ahead of the one reported (they coalesce into batches)


def heal_once(
    settings: Settings, deliveries: Sequence[Delivery], fmt: Format, *, check: bool = False
) -> bool:
    """Heal, page and print the report; True when every outcome is fine (exit 0). With `check`
    (a dry-run), a planned heal is not fine either: something needs healing."""
    playbooks = load_playbooks(settings.playbooks_dir)
    pager = _pager(settings)
    checkout = open_checkout(settings.git)
    try:
        if not settings.dry_run and not checkout.owned and checkout.has_local_changes():
            raise ConfigError(
                f"{checkout.root}: has uncommitted changes to tracked files; commit or stash them"
            )
        healer = Healer(
            playbooks,
            checkout,
            dry_run=settings.dry_run,
            max_batch=settings.max_batch,
            max_batch_files=settings.max_batch_files,
        )
        # The report is an escalation channel too: without a pager it lists what to look at.
        context = Context(dry_run=settings.dry_run, pager=True)
        outcomes, paged = asyncio.run(
            _heal_and_page(healer, deliveries, pager, repo=healer.repo_key, context=context)
        )
        decisions = [decide(o, context) for o in outcomes]
    finally:
        checkout.close()
    where = "listed in this report (no pager configured: set PAGER_WEBHOOK_URL)"
    refused = 0
    if pager is not None:
        from auto_healer.pager import PageResult

        where = _pages_summary(pager, paged)
        refused = paged.count(PageResult.DEAD_LETTERED)
    pages = pager.planned_requests() if pager is not None and pager.dry_run else None
    escalations = [d.page.value for d in decisions]
    report = render(outcomes, fmt, escalations_to=where, pages=pages, escalations=escalations)
    if fmt == "text":
        print_report(report, outcomes, escalations_to=where)
    else:
        print(report)
    _github_step_outputs(outcomes, where)
    # A runner's state dir is thrown away after the job: pages waiting in its outbox would be
    # lost without a word, so there they fail the job instead.
    ephemeral = os.environ.get("GITHUB_ACTIONS") == "true"
    stranded = pager.pending if pager is not None and not pager.dry_run and ephemeral else 0
    if stranded:
        print(
            f"auto-healer: {stranded} page(s) could not be delivered and this runner's "
            "outbox is discarded after the job",
            file=sys.stderr,
        )
    planned = sum(o.kind is Kind.PLANNED for o in outcomes) if check else 0
    if planned:
        print(f"auto-healer: {planned} injuries would be healed (plan above)", file=sys.stderr)
    return exit_ok(decisions, pages_refused=refused + stranded) and not planned


def _pager(settings: Settings) -> Pager | None:
    """The pager, imported (with httpx) only when PAGER_WEBHOOK_URL is set."""
    if not (settings.pager_webhook_url or "").strip():
        return None
    from auto_healer.pager import Pager

    return Pager.from_settings(settings.pager, dry_run=settings.dry_run)


async def _heal_and_page(
    healer: Healer,
    deliveries: Sequence[Delivery],
    pager: Pager | None,
    *,
    repo: str | None,
    context: Context,
) -> tuple[list[Outcome], list[PageResult]]:
    """Heal every entry; with a pager, page each outcome as it comes (trigger or resolve)."""
    if pager is None:
        return await _heal_all(healer, deliveries, dry_run=healer.dry_run), []
    paged: list[PageResult] = []

    async def page(outcome: Outcome) -> None:
        decision: Decision = decide(outcome, context)
        paged.append(await pager.notify(outcome, decision.page, repo=repo))

    await pager.start()
    try:
        await pager.flush()  # pages an earlier run could not deliver go first
        outcomes = await _heal_all(healer, deliveries, dry_run=healer.dry_run, on_outcome=page)
        await pager.flush()
    finally:
        await pager.aclose()
    return outcomes, paged


def _pages_summary(pager: Pager, paged: Sequence[PageResult]) -> str:
    """Where escalations went: the pager's host (never its key) and what became of each page."""
    from auto_healer.pager import PageResult

    counts = Counter(d.value for d in paged if d is not PageResult.NONE)
    done = ", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing to page"
    if pager.dry_run:
        return f"{pager.destination} (dry-run, nothing sent: {done})"
    if pager.pending:
        done += f"; {pager.pending} waiting in {pager.state_path} for the next run"
    return f"{pager.destination} ({done})"


def _github_step_outputs(outcomes: Sequence[Outcome], escalations_to: str) -> None:
    """In GitHub Actions: the Markdown plan/report in the step summary, counts as outputs."""
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(render(outcomes, "markdown", escalations_to=escalations_to))
    output_file = os.environ.get("GITHUB_OUTPUT")
    if output_file:
        counts = summary(outcomes)
        with open(output_file, "a", encoding="utf-8") as fh:
            for key in ("healed", "planned", "skipped", "escalated", "failed", "rejected"):
                fh.write(f"{key}={counts[key]}\n")


async def _heal_all(
    healer: Healer,
    deliveries: Sequence[Delivery],
    *,
    dry_run: bool,
    on_outcome: Callable[[Outcome], Awaitable[None]] | None = None,
) -> list[Outcome]:
    with progress(len(deliveries)) as advance:
        return await _heal_each(
            healer, deliveries, dry_run=dry_run, on_outcome=on_outcome, advance=advance
        )


async def _heal_each(
    healer: Healer,
    deliveries: Sequence[Delivery],
    *,
    dry_run: bool,
    on_outcome: Callable[[Outcome], Awaitable[None]] | None,
    advance: Callable[[int], None],
) -> list[Outcome]:
    """Entries are handed to the healer ahead of the one awaited (at most `WINDOW` at once), so
    they queue and are healed in batches, one commit per batch; outcomes are reported, and
    paged, in the file's order."""
    outcomes: list[Outcome] = []
    window: deque[tuple[int, asyncio.Task[Outcome]]] = deque()

    async def settle_oldest() -> None:
        seen, task = window.popleft()
        outcome = await task
        outcomes.append(outcome)
        if on_outcome is not None:
            await on_outcome(outcome)
        if not window or window[0][0] != seen:
            advance(seen)

    gate = Gate()  # the one-shot trusts its own file: no signatures
    try:
        for seen, delivery in enumerate(deliveries, 1):
            for admitted in gate.admit(delivery):
                if isinstance(admitted, Rejection):
                    outcome = Outcome(
                        Kind.REJECTED,
                        f"{delivery.subject}: {admitted.reason}",
                        raw=delivery.data,
                        raw_id=admitted.injury_id,
                        dry_run=dry_run,
                    )
                    window.append((seen, asyncio.create_task(_ready(outcome))))
                else:
                    window.append((seen, asyncio.create_task(healer.handle(admitted))))
                while len(window) > WINDOW:
                    await settle_oldest()
        while window:
            await settle_oldest()
    finally:
        for _, task in window:
            task.cancel()
        if window:
            await asyncio.wait([t for _, t in window])
    return outcomes


async def _ready(outcome: Outcome) -> Outcome:
    return outcome
