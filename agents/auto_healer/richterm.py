"""The rich pieces of the terminal output (`terminal` decides when they are drawn): a console
that colours exactly as `terminal.use_color` says, the one-shot's progress bar and its coloured
text report. Imported only when one of them is drawn: rich costs start-up time.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from auto_healer.outcomes import Kind, Outcome
from auto_healer.report import label
from auto_healer.terminal import is_terminal, use_color

_STYLE = {
    Kind.HEALED: "green",
    Kind.PLANNED: "cyan",
    Kind.SKIPPED: "dim",
    Kind.ESCALATED: "yellow",
    Kind.FAILED: "bold red",
    Kind.REJECTED: "red",
    Kind.HELD: "yellow",
}


def console(stream: TextIO) -> Console:
    """A rich console on `stream` that colours exactly when `use_color` says so (no escape
    code at all otherwise) and redraws only on a real terminal."""
    color = use_color(stream)
    return Console(
        file=stream,
        color_system="auto" if color else None,
        force_terminal=color or None,
        force_interactive=is_terminal(stream),
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=True,  # long lines (a log line, a path) are the terminal's to wrap, not cut
    )


def progress_bar(what: str) -> Progress:
    """The one-shot's progress bar on stderr; log lines written to stderr print above it."""
    return Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console(sys.stderr),
        redirect_stdout=False,  # stdout may be a file (the report): never into the bar's stream
        redirect_stderr=True,
    )


def print_coloured(text: str, outcomes: Sequence[Outcome], *, escalations_to: str) -> None:
    """A summary table (outcome, playbook, count) first, then the report's details with their
    labels coloured."""
    out = console(sys.stdout)
    out.print(summary_table(outcomes, escalations_to=escalations_to))
    _, _, details = text.partition("\n\n")  # the report's first paragraph is the summary
    if details:
        out.print()
        out.print(_coloured(details))


class _RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


def summary_table(outcomes: Sequence[Outcome], *, escalations_to: str) -> Table:
    """How many injuries ended how, by playbook; where escalations went, when there are any."""
    counts = Counter((o.kind, o.playbook or "—") for o in outcomes)
    order = {kind: i for i, kind in enumerate(Kind)}
    table = Table(
        title=f"auto-healer: {len(outcomes)} injuries", title_justify="left", box=box.SIMPLE_HEAD
    )
    table.add_column("outcome")
    table.add_column("playbook")
    table.add_column("injuries", justify="right")
    for (kind, playbook), n in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        table.add_row(Text(label(kind), style=_STYLE[kind]), playbook, str(n))
    if any(o.kind in (Kind.ESCALATED, Kind.FAILED, Kind.REJECTED) for o in outcomes):
        table.caption = f"escalations: {escalations_to}"
        table.caption_justify = "left"
    return table


def _coloured(details: str) -> Text:
    text = Text(details)
    for kind, style in _STYLE.items():
        text.highlight_regex(rf"(?m)^{label(kind)}\b", style)
    text.highlight_regex(r"(?m)^ +\+(?!\+\+ ).*$", "green")
    text.highlight_regex(r"(?m)^ +-(?!-- ).*$", "red")
    text.highlight_regex(r"(?m)^ +@@.*$", "cyan")
    return text
