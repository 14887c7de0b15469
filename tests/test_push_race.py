"""Pushes that win against a busy remote: a rejected push is rebased onto the new head, re-checked
and pushed again at once, within a time budget; never forced, no foreign commit lost."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks

from tests.busy_support import BusyRemote, assert_nothing_lost
from tests.conftest import PLAYBOOKS, git, injury, injury_trailers
from tests.test_checkout import other_clone_pushes

Repo = tuple[Path, Path]
MESSY = "x  =  {{'a':1,\n'b' :[ 1,2 ]}}\ndef  f( a ):\n  return   a+{n}\n"


def _slow_formatter_books(tmp: Path, delay_s: float) -> Path:
    """The shipped playbooks, the formatter taking `delay_s` before real ruff (as a formatter
    on a large file, or a heal over a network, does): redoing a heal then takes longer than
    the teammate takes to push again."""
    books = tmp / "books"
    shutil.copytree(PLAYBOOKS, books)
    script = (
        f"import subprocess,sys,time;time.sleep({delay_s});"
        "sys.exit(subprocess.call([sys.executable,'-m','ruff','format',sys.argv[1]]))"
    )
    argv = json.dumps([sys.executable, "-c", script, "{path}"])
    shipped = books / "unformatted_code.yaml"
    text = shipped.read_text()
    assert "      formatter: ruff\n" in text
    shipped.write_text(text.replace("      formatter: ruff\n", f"      command: {argv}\n"))
    return books


def _seed_messy(work: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(MESSY.format(n=i))
    git(work, "add", "-A")
    git(work, "-c", "user.name=bee", "-c", "user.email=b@h", "commit", "-qm", "messy")
    git(work, "push", "-q", "origin", "main")


def _ruff_formatted(text: str) -> str:
    argv = [sys.executable, "-m", "ruff", "format", "-"]
    return subprocess.run(argv, input=text, capture_output=True, text=True, check=True).stdout


async def _format_all(healer: Healer, names: list[str]) -> list[Outcome]:
    parsed = [
        parse_injury(json.dumps(injury(n, injury_type="unformatted_code")).encode()) for n in names
    ]
    return list(await asyncio.gather(*(healer.handle(p) for p in parsed)))


async def test_ten_heals_win_against_a_remote_pushed_every_200ms(
    repo: Repo, tmp_path: Path
) -> None:
    """10 format injuries whose heal takes over a second, a teammate pushing every 200 ms: each is
    healed on its first delivery (a lost push is rebased and pushed again, not redone), every
    teammate commit kept, every update of main a fast-forward."""
    remote, work = repo
    names = [f"core/src/messy{i}.py" for i in range(10)]
    _seed_messy(work, names)
    books = _slow_formatter_books(tmp_path, 0.1)
    healer = Healer(load_playbooks(books), Checkout.open(work), dry_run=False)
    teammate = BusyRemote(tmp_path, remote)
    try:
        teammate.wait_busy()
        outcomes = await asyncio.wait_for(_format_all(healer, names), 60)
        kept = teammate.stop()
    finally:
        teammate.kill()
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 10, [o.reason for o in outcomes]
    assert max(o.attempts for o in outcomes) > 1, "no push was lost: the remote was not busy"
    for i, name in enumerate(names):
        assert git(remote, "show", f"main:{name}") == _ruff_formatted(MESSY.format(n=i))
    assert sorted(injury_trailers(remote)) == sorted(o.injury_id for o in outcomes)
    assert_nothing_lost(remote, kept)
    assert git(work, "status", "--porcelain") == ""


async def test_a_teammate_edit_of_the_healed_file_is_healed_again_on_the_new_head(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The remote's new commit rewrote the very file being formatted: the rebase is not trusted,
    the file is formatted again as the teammate left it, and their commit is kept."""
    remote, work = repo
    name = "core/src/messy0.py"
    _seed_messy(work, [name])
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False)
    real_push = healer.checkout.push
    theirs = "y  =  [ 1,2 ]\n"
    raced: list[str] = []

    def push_after_the_teammate(target: str) -> bool:
        if not raced:
            other = tmp_path / "teammate"
            git(tmp_path, "clone", "-q", str(remote), str(other))
            (other / name).write_text(theirs)
            git(other, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "edit")
            git(other, "push", "-q", "origin", "main")
            raced.append(git(other, "rev-parse", "HEAD").strip())
        return real_push(target)

    healer.checkout.push = push_after_the_teammate  # type: ignore[method-assign]
    [outcome] = await _format_all(healer, [name])
    assert outcome.kind is Kind.HEALED, outcome.reason
    assert git(remote, "show", f"main:{name}") == _ruff_formatted(theirs)
    assert git(remote, "rev-parse", "main~1").strip() == raced[0]
    logged = capsys.readouterr()  # stdout or stderr: wherever an earlier test pointed logging
    assert "push_race_replan" in logged.out + logged.err
    assert git(work, "status", "--porcelain") == ""


async def test_a_rebased_heal_is_rechecked_and_keeps_the_other_commit(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A commit elsewhere lands first: the heal commit is rebased onto it (not planned again)
    and pushed at once; the directory is still gone and the other commit is its parent."""
    remote, work = repo
    (work / "core/src/stray").mkdir(parents=True)
    (work / "core/src/stray/x.py").write_text("x = 1\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=b", "-c", "user.email=b@h", "commit", "-qm", "stray")
    git(work, "push", "-q", "origin", "main")
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, max_batch=1)
    real_push = healer.checkout.push
    raced: list[str] = []

    def push_after_someone_else(target: str) -> bool:
        if not raced:
            raced.append(other_clone_pushes(tmp_path, remote))
        return real_push(target)

    healer.checkout.push = push_after_someone_else  # type: ignore[method-assign]
    [outcome] = await asyncio.gather(
        healer.handle(parse_injury(json.dumps(injury("core/src/stray/")).encode()))
    )
    assert outcome.kind is Kind.HEALED, outcome.reason
    assert outcome.attempts == 2
    assert git(remote, "rev-parse", "main").strip() == outcome.commit
    assert git(remote, "rev-parse", "main~1").strip() == raced[0]
    assert not git(remote, "ls-tree", "-r", "--name-only", "main", "core/src/stray")
    logged = capsys.readouterr()  # stdout or stderr: wherever an earlier test pointed logging
    out = logged.out + logged.err
    assert "push_raced" in out
    assert "push_race_replan" not in out
    assert "heal_retry" not in out
