"""The per-injury outcome line of a plan or a skip: written at debug, not even built above it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import sys
from auto_healer.logs import configure_logging
from auto_healer.outcomes import Kind, Outcome, log_outcome
configure_logging("json", sys.argv[1])
log_outcome(Outcome(Kind.PLANNED, "would commit"), dry_run=True)
log_outcome(Outcome(Kind.FAILED, "the push failed"), dry_run=True)
"""


@pytest.mark.parametrize(
    ("level", "said"), [("debug", ["planned", "failed"]), ("info", ["failed"])]
)
def test_a_quiet_outcome_is_said_at_debug_only(level: str, said: list[str]) -> None:
    """At debug a plan's line is written as ever; at info only the failure's (a fresh process:
    loggers cached by other tests would not see the level)."""
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    assert [line["outcome"] for line in lines if line["event"] == "injury_outcome"] == said
