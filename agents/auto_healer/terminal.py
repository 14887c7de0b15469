"""The one place that decides how output looks to a person.

Whether a stream is a terminal, whether to colour it (`NO_COLOR`, `FORCE_COLOR`, `TERM=dumb`),
and the rich pieces of the one-shot heal: a progress bar with rate and ETA that log lines print
above, and the text report with a summary table first and the coloured details after.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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

BAR_FROM = 5  # fewer injuries than this finish before a bar says anything
_STYLE = {
    Kind.HEALED: "green",
    Kind.PLANNED: "cyan",
    Kind.SKIPPED: "dim",
    Kind.ESCALATED: "yellow",
    Kind.FAILED: "bold red",
    Kind.REJECTED: "red",
    Kind.HELD: "yellow",
}


def is_terminal(stream: TextIO) -> bool:
    """True when `stream` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_color(stream: TextIO) -> bool:
    """Colour `stream`? `NO_COLOR` (non-empty) says no, `FORCE_COLOR` (non-empty) says yes even
    without a terminal (no-color.org, force-color.org); else a terminal that is not dumb."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return is_terminal(stream) and os.environ.get("TERM") != "dumb"


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


class _RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


@contextmanager
def progress(total: int, what: str = "healing") -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while `total` items are worked through, when a person watches;
    log lines written to stderr meanwhile print above it. Yields `advance(done)`."""
    if total < BAR_FROM or not is_terminal(sys.stderr):
        yield lambda done: None
        return
    bar = Progress(
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
    with bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.update(task, completed=done)


def print_report(text: str, outcomes: Sequence[Outcome], *, escalations_to: str) -> None:
    """Print a text report on stdout: as it is when not coloured; else a summary table (outcome,
    playbook, count) first, then the details with their labels coloured."""
    if not use_color(sys.stdout):
        print(text)
        return
    out = console(sys.stdout)
    out.print(summary_table(outcomes, escalations_to=escalations_to))
    _, _, details = text.partition("\n\n")  # the report's first paragraph is the summary
    if details:
        out.print()
        out.print(_coloured(details))


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
