"""The one-shot heal as a person sees it: in a real pseudo-terminal (progress bar with rate and
ETA, log lines above it, the summary table first), with NO_COLOR and FORCE_COLOR, and the
command line's manners (`--log-level`, a closed pipe)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

from auto_healer.demo import make_repo

from tests.conftest import injury, write_injuries
from tests.test_deploy_config import BIN

SGR = re.compile(r"\x1b\[[0-9;]*m")  # a colour or style
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
DETAIL = "WOULD HEAL unauthorized_directory at"


def run_in_pty(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run argv with stdin, stdout and stderr on a real 120x40 pseudo-terminal; all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + 90
    while True:
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no output for too long; so far: {bytes(out[-500:])!r}"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=30), out.decode(errors="replace")


def lines(raw: str) -> list[str]:
    """What was written, as the pieces between carriage returns and newlines, escapes removed."""
    return [p for p in re.split(r"[\r\n]+", ESCAPE.sub("", raw)) if p.strip()]


def many_injuries(tmp_path: Path, planned: int, escalated: int) -> tuple[Path, Path]:
    """A checkout with `planned` stray directories, and injuries for them plus `escalated`
    more that a human must decide."""
    seed = {f"core/src/stray{i}/x.txt": f"{i}\n" for i in range(planned)}
    _, work = make_repo(tmp_path, {"README.md": "hive\n", **seed})
    payloads = [injury(f"core/src/stray{i}/") for i in range(planned)]
    payloads += [injury(f"core/src/legacy{i}/", auto_heal=False) for i in range(escalated)]
    return work, write_injuries(tmp_path / "injuries.json", *payloads)


def term_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return {**env, "TERM": "xterm-256color", "LOG_FORMAT": "auto", **extra}


HEAL = [str(BIN / "auto-healer"), "heal"]


def test_tty_heal_shows_a_bar_above_logs_and_the_summary_first(tmp_path: Path) -> None:
    """500 injuries on a TTY: a bar with rate and ETA, log lines whole, summary table first."""
    work, injuries = many_injuries(tmp_path, planned=450, escalated=50)
    code, raw = run_in_pty(
        # debug: a plan logs at debug, and every one of the 500 lines must stay whole
        [*HEAL, str(injuries), "--dry-run", "--repo", str(work), "--log-level", "debug"],
        term_env(),
        tmp_path,
    )
    assert code == 0, raw[-2000:]
    shown = lines(raw)
    bars = [ln for ln in shown if "/500" in ln and "ETA" in ln]
    assert bars, "no progress bar"
    assert any(re.search(r"500/500 +100% +[\d,.]+/s", ln) for ln in bars), bars[-1]
    logs = [ln for ln in shown if LOG_STAMP.search(ln)]
    assert len(logs) >= 500, "the heal's log lines are missing"
    run_together = [ln for ln in logs if not LOG_STAMP.match(ln)]
    assert not run_together, run_together[:3]
    table = next(i for i, ln in enumerate(shown) if "auto-healer: 500 injuries" in ln)
    assert re.search(r"WOULD HEAL +unauthorized_directory +450", "\n".join(shown[table:]))
    assert re.search(r"ESCALATED +unauthorized_directory +50", "\n".join(shown[table:]))
    first_detail = next(i for i, ln in enumerate(shown) if ln.startswith(DETAIL))
    assert table < first_detail
    assert SGR.search(raw), "a terminal without NO_COLOR is coloured"


def test_no_color_on_a_tty_writes_no_colour_codes(tmp_path: Path) -> None:
    """NO_COLOR: the bar, the logs and the report on a TTY carry no colour or style code."""
    work, injuries = many_injuries(tmp_path, planned=8, escalated=2)
    code, raw = run_in_pty(
        [str(BIN / "auto-healer"), "heal", str(injuries), "--dry-run", "--repo", str(work)],
        term_env(NO_COLOR="1"),
        tmp_path,
    )
    assert code == 0, raw[-2000:]
    assert "10/10" in raw
    assert DETAIL in raw
    assert not SGR.search(raw), SGR.findall(raw)[:5]


def test_force_color_colours_the_report_without_a_tty(tmp_path: Path) -> None:
    """FORCE_COLOR: the text report piped to a file is coloured, summary table first."""
    work, injuries = many_injuries(tmp_path, planned=3, escalated=1)
    result = subprocess.run(
        [str(BIN / "auto-healer"), "heal", str(injuries), "--dry-run", "--repo", str(work),
         "--format", "text"],
        env=term_env(FORCE_COLOR="1"), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert SGR.search(result.stdout)
    plain = SGR.sub("", result.stdout)
    assert plain.index("auto-healer: 4 injuries") < plain.index(DETAIL)
    assert not SGR.search(result.stderr), "stderr is not a terminal: JSON logs, uncoloured"


def test_plain_text_report_starts_with_the_summary(tmp_path: Path) -> None:
    """Without colour the text report is as before, its summary paragraph first."""
    work, injuries = many_injuries(tmp_path, planned=2, escalated=1)
    result = subprocess.run(
        [str(BIN / "auto-healer"), "heal", str(injuries), "--dry-run", "--repo", str(work),
         "--format", "text"],
        env=term_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    head, _, details = result.stdout.partition("\n\n")
    assert head.splitlines()[0] == "2 planned, 1 escalated"
    assert head.splitlines()[1].startswith("escalations: ")
    assert details.startswith(DETAIL)
    assert "ESCALATED  unauthorized_directory at core/src/legacy0/" in details
    assert not SGR.search(result.stdout)


def test_log_level_flag_on_every_command(tmp_path: Path) -> None:
    """`--log-level` is accepted by every command and silences lower levels."""
    work, injuries = many_injuries(tmp_path, planned=1, escalated=0)
    base = [str(BIN / "auto-healer"), "heal", str(injuries), "--dry-run", "--repo", str(work)]
    env = term_env(LOG_FORMAT="json")
    quiet = subprocess.run([*base, "--log-level", "warning"], env=env, capture_output=True,
                           text=True, check=False)  # fmt: skip
    loud = subprocess.run([*base, "--log-level", "debug"], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert not [ln for ln in quiet.stderr.splitlines() if '"level": "info"' in ln]
    assert [json.loads(ln)["event"] for ln in loud.stderr.splitlines() if ln.startswith("{")]
    for command in ("validate", "match", "schema", "heal", "run", "publish", "tail", "demo"):
        helped = subprocess.run([str(BIN / "auto-healer"), command, "--help"],
                                capture_output=True, text=True, check=True)  # fmt: skip
        assert "--log-level" in helped.stdout, command


def test_a_closed_pipe_ends_quietly() -> None:
    """`auto-healer schema | head -1`: the reader gone, no traceback, exit 141 like SIGPIPE."""
    proc = subprocess.Popen(
        [str(BIN / "auto-healer"), "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child writes: its first write finds the pipe closed
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 141
    assert err == b""
