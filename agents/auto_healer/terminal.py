"""The one place that decides how output looks to a person.

Whether a stream is a terminal, whether to colour it (`NO_COLOR`, `FORCE_COLOR`, `TERM=dumb`),
and when the one-shot heal draws its rich pieces (`richterm`): a progress bar with rate and ETA
that log lines print above, and the text report with a summary table first and the coloured
details after. rich is imported only then: a heal writing JSON to a pipe starts without it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from auto_healer.outcomes import Outcome

BAR_FROM = 5  # fewer injuries than this finish before a bar says anything
# C0 controls but the tab, DEL, C1 controls, lone surrogates: never written to a person raw
_UNSHOWN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def shown(text: str) -> str:
    """One line as it may reach a person's terminal: what a publisher wrote (a path, a reason)
    can hold escape sequences that retitle, clear or rewrite the screen, or a newline that
    forges a line; each such character is written as its `\\xNN` (`\\uXXXX`) escape."""
    return _UNSHOWN.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text
    )


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


@contextmanager
def progress(total: int, what: str = "healing") -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while `total` items are worked through, when a person watches;
    log lines written to stderr meanwhile print above it. Yields `advance(done)`."""
    if total < BAR_FROM or not is_terminal(sys.stderr):
        yield lambda done: None
        return
    from auto_healer.richterm import progress_bar

    with progress_bar(what) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.update(task, completed=done)


def print_report(text: str, outcomes: Sequence[Outcome], *, escalations_to: str) -> None:
    """Print a text report on stdout: as it is when not coloured; else a summary table (outcome,
    playbook, count) first, then the details with their labels coloured."""
    if not use_color(sys.stdout):
        print(text)
        return
    from auto_healer.richterm import print_coloured

    print_coloured(text, outcomes, escalations_to=escalations_to)
