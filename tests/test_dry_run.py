"""Dry-run: the report is the plan, and the checkout and its remote stay byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from auto_healer.cli import main

from tests.conftest import PLAYBOOKS, git, injury, tree_digest, write_injuries

Repo = tuple[Path, Path]
STUFF = "core/src/random_stuff"


def dry_run(
    capsys: pytest.CaptureFixture[str], work: Path, injuries: Path, fmt: str, *extra: str
) -> tuple[int, str]:
    code = main(
        [
            "heal",
            str(injuries),
            "--repo",
            str(work),
            "--playbooks",
            str(PLAYBOOKS),
            "--format",
            fmt,
            *extra,
        ]
    )
    return code, capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["json", "text", "markdown"])
def test_dry_run_delete_plans_and_touches_nothing(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Done-when: --dry-run shows the delete plan; checkout and remote stay byte-identical."""
    remote, work = repo
    before = tree_digest(work), tree_digest(remote)
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    code, out = dry_run(capsys, work, path, fmt, "--dry-run")
    assert code == 0
    assert (tree_digest(work), tree_digest(remote)) == before
    assert f"{STUFF}/hack.py" in out
    assert f"{STUFF}/notes.txt" in out
    assert "auto-heal: remove unauthorized directory core/src/random_stuff" in out
    if fmt == "json":
        [outcome] = json.loads(out)["outcomes"]
        assert outcome["outcome"] == "planned"
        assert outcome["dry_run"] is True
        assert outcome["playbook"] == "unauthorized_directory"
        assert outcome["steps"][0]["file_count"] == 2
        assert outcome["branch"] == "main"
        assert outcome["commit"] is None
    elif fmt == "text":
        assert "WOULD HEAL" in out
        assert "playbook: unauthorized_directory" in out
        assert "files (2):" in out
    else:
        assert "## auto-healer plan (dry-run)" in out
        assert "Commit message:" in out


def test_dry_run_format_shows_the_diff_and_touches_nothing(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Done-when: --dry-run of format_code shows ruff's diff; nothing changes anywhere."""
    remote, work = repo
    before = tree_digest(work), tree_digest(remote)
    path = write_injuries(tmp_path / "i.json", injury("core/src/messy.py", "unformatted_code"))
    code, out = dry_run(capsys, work, path, "text", "--dry-run")
    assert code == 0
    assert (tree_digest(work), tree_digest(remote)) == before
    assert "--- a/core/src/messy.py" in out
    assert "+def add(a, b):" in out
    assert "-def  add( a,b ):" in out
    assert "auto-heal: format core/src/messy.py" in out


def test_dry_run_from_the_environment(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DRY_RUN=true is honoured like --dry-run, for every injury of the run."""
    remote, work = repo
    monkeypatch.setenv("DRY_RUN", "true")
    before = tree_digest(work), tree_digest(remote)
    path = write_injuries(
        tmp_path / "i.json",
        injury(STUFF),
        injury("core/src/messy.py", "unformatted_code"),
        injury("core/src/legacy", auto_heal=False),
    )
    code, out = dry_run(capsys, work, path, "json")
    assert code == 0
    assert (tree_digest(work), tree_digest(remote)) == before
    doc = json.loads(out)
    assert [o["outcome"] for o in doc["outcomes"]] == ["planned", "planned", "escalated"]
    assert doc["outcomes"][2]["escalation"] == "trigger"


def test_dry_run_shows_escalations_and_refusals(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan names what would be escalated or refused (exit 1); nothing changes."""
    remote, work = repo
    before = tree_digest(work), tree_digest(remote)
    path = write_injuries(
        tmp_path / "i.json", injury("core/src/legacy", auto_heal=False), injury("../../etc")
    )
    code, out = dry_run(capsys, work, path, "text", "--dry-run")
    assert code == 1
    assert (tree_digest(work), tree_digest(remote)) == before
    assert "ESCALATED" in out
    assert "REJECTED" in out
    assert "escalations:" in out


def test_dry_run_caps_the_file_list_but_counts_all(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A big directory: the plan lists 20 files and says how many more, with the true count."""
    remote, work = repo
    for i in range(30):
        (work / STUFF / f"f{i:02}.txt").write_text(str(i))
    git(work, "add", "-A")
    git(work, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "more")
    git(work, "push", "-q", "origin", "main")
    before = tree_digest(work), tree_digest(remote)
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    code, out = dry_run(capsys, work, path, "text", "--dry-run")
    assert code == 0
    assert "files (32):" in out
    assert "... and 12 more" in out
    code, out = dry_run(capsys, work, path, "json", "--dry-run")
    step = json.loads(out)["outcomes"][0]["steps"][0]
    assert step["file_count"] == 32
    assert len(step["files"]) == 20
    assert (tree_digest(work), tree_digest(remote)) == before


def test_dry_run_of_a_cloned_url_leaves_the_remote_identical(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --repo-url, a dry-run plans on a clone and the remote stays byte-identical."""
    remote, _ = repo
    monkeypatch.setenv("WORK_DIR", str(tmp_path / "clones"))
    before = tree_digest(remote)
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    code = main(
        [
            "heal",
            str(path),
            "--repo-url",
            str(remote),
            "--playbooks",
            str(PLAYBOOKS),
            "--format",
            "json",
            "--dry-run",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["outcomes"][0]["outcome"] == "planned"
    assert tree_digest(remote) == before
