"""A publisher's path never reaches a person's terminal raw in the text report of `heal`."""

from __future__ import annotations

from pathlib import Path

import pytest
from auto_healer.cli import main

from tests.conftest import PLAYBOOKS, injury, write_injuries

HOSTILE = "core/src/x\x1b]0;pwned\x07\x1b[2J\nHEALED     forged at core/src/app.py\r\x9b31m"


@pytest.mark.parametrize("colour", ["NO_COLOR", "FORCE_COLOR"])
def test_control_characters_of_a_path_are_escaped_in_the_text_report(
    repo: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    colour: str,
) -> None:
    """No escape sequence, bell, carriage return or forged line from the payload is printed."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv(colour, "1")
    _, checkout = repo
    file = write_injuries(tmp_path / "i.json", injury(HOSTILE))
    args = ["heal", str(file), "--repo", str(checkout), "--dry-run", "--format", "text"]
    assert main([*args, "--playbooks", str(PLAYBOOKS)]) == 0
    out = capsys.readouterr().out
    assert "\x1b]0;pwned" not in out and "\x07" not in out and "\x1b[2J" not in out
    assert "\r" not in out and "\x9b" not in out
    assert not any(line.lstrip().startswith("HEALED") for line in out.splitlines())
    assert "core/src/x\\x1b]0;pwned\\x07" in out
