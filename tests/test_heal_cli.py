"""`auto-healer heal` end to end: real CLI, real git remote, real ruff; exit codes and reports."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from auto_healer.cli import main
from auto_healer.demo import SEED, make_repo
from auto_healer.outcomes import Kind, Outcome
from auto_healer.report import render

from tests.conftest import (
    PLAYBOOKS,
    commit_count,
    git,
    heal_cli,
    injury,
    remote_files,
    tree_digest,
    write_injuries,
)

Repo = tuple[Path, Path]
STUFF = "core/src/random_stuff"


@pytest.fixture
def hive(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A remote + checkout with protected dirs and committed symlinks leading outside."""
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "precious.txt").write_text("outside the repo")
    files = {**SEED, "docs/guide/a.md": "doc\n", ".github/workflows/ci.yml": "on: push\n"}
    (tmp_path / "hive").mkdir()
    remote, work = make_repo(tmp_path / "hive", files)
    (work / "escape").symlink_to(outside)
    (work / "core/src/escape_rel").symlink_to("../../../../outside")
    git(work, "add", "-A")
    git(work, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "links")
    git(work, "push", "-q", "origin", "main")
    return remote, work, outside


def test_heal_deletes_the_directory_on_the_remote_in_one_commit(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Done-when: the directory is gone on the remote branch after exactly one new commit."""
    remote, work = repo
    before = commit_count(remote)
    path = write_injuries(tmp_path / "i.json", injury(STUFF + "/", **{"audit_id": "A1"}))
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    [outcome] = report["outcomes"]
    assert outcome["outcome"] == "healed"
    assert outcome["steps"][0]["file_count"] == 2
    assert outcome["injury"]["audit_id"] == "A1"
    assert commit_count(remote) == before + 1
    assert not any(f.startswith(STUFF) for f in remote_files(remote))
    assert "core/src/app.py" in remote_files(remote)
    message = git(remote, "log", "-1", "--format=%B", "main")
    assert f"Injury-Id: {outcome['injury_id']}\nHealed-By: auto-healer" in message
    assert outcome["commit"] == git(remote, "rev-parse", "main").strip()
    assert git(work, "status", "--porcelain") == ""


def test_a_second_heal_is_a_no_op(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Done-when: running the same injury again skips (already healthy), no new commit."""
    remote, work = repo
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    assert heal_cli(capsys, str(path), "--repo", str(work))[0] == 0
    count, digest = commit_count(remote), tree_digest(remote)
    code, report, _ = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "skipped"
    assert "already absent" in report["outcomes"][0]["reason"]
    assert commit_count(remote) == count
    assert tree_digest(remote) == digest


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../../etc", "contains '..'"),
        ("core/../../outside/victim", "contains '..'"),
        ("/etc", "absolute"),
        ("escape/victim", "symlink leading outside"),
        ("core/src/escape_rel", "symlink leading outside"),
        (".git", "protected by '.git'"),
        (".git/refs", "protected"),
        (".github/workflows", "protected by '.github/\\*\\*'"),
        ("docs/guide", "protected by 'docs/\\*\\*'"),
        ("docs", "protected by 'docs/\\*\\*'"),
        ("./", "checkout root"),
        ("core/src/app.py", "not a directory"),
    ],
)
def test_unsafe_injuries_exit_1_and_change_nothing(
    hive: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    why: str,
) -> None:
    """Done-when: traversal, symlink, .git and protected paths are rejected with the reason."""
    remote, work, outside = hive
    digests = tree_digest(work, skip_git=True), tree_digest(remote), tree_digest(outside)
    injuries = write_injuries(tmp_path / "i.json", injury(path))
    code, report, _ = heal_cli(capsys, str(injuries), "--repo", str(work))
    assert code == 1
    assert report is not None
    [outcome] = report["outcomes"]
    assert outcome["outcome"] == "rejected"
    assert re.search(why, outcome["reason"]), outcome["reason"]
    assert outcome["escalation"] == "trigger"
    assert git(work, "status", "--porcelain", "--ignored") == ""
    after = tree_digest(work, skip_git=True), tree_digest(remote), tree_digest(outside)
    assert after == digests


def test_auto_heal_false_and_unmatched_are_escalated_with_exit_0(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto_heal: false` and injuries no playbook claims are escalations, not failures."""
    remote, work = repo
    digest = tree_digest(remote)
    path = write_injuries(
        tmp_path / "i.json",
        injury(STUFF, auto_heal=False),
        injury("x", injury_type="mystery_organ"),
    )
    code, report, _ = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0
    assert report is not None
    assert [o["outcome"] for o in report["outcomes"]] == ["escalated", "escalated"]
    assert "auto_heal is false" in report["outcomes"][0]["reason"]
    assert "no playbook matches" in report["outcomes"][1]["reason"]
    assert report["summary"]["escalated"] == 2
    assert tree_digest(remote) == digest


def test_an_invalid_entry_is_rejected_others_still_heal(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad payload in the list is rejected naming the field (exit 1); the good one heals."""
    remote, work = repo
    bad = injury("x", severity="apocalyptic")
    path = write_injuries(tmp_path / "i.json", bad, injury(STUFF))
    code, report, _ = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 1
    assert report is not None
    assert [o["outcome"] for o in report["outcomes"]] == ["rejected", "healed"]
    assert "entry 1" in report["outcomes"][0]["reason"]
    assert "field 'severity'" in report["outcomes"][0]["reason"]
    assert not any(f.startswith(STUFF) for f in remote_files(remote))


def test_injuries_from_stdin_as_json_lines(
    repo: Repo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-` reads JSON Lines from stdin."""
    _, work = repo
    lines = "\n".join(json.dumps(i) for i in (injury(STUFF), injury("core/src/none")))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines.encode() + b"\n")))
    code, report, _ = heal_cli(capsys, "-", "--repo", str(work))
    assert code == 0
    assert report is not None
    assert [o["outcome"] for o in report["outcomes"]] == ["healed", "skipped"]


def test_format_code_heal_commits_the_formatted_file(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unformatted_code injury is fixed with real ruff, one commit on the remote."""
    remote, work = repo
    before = commit_count(remote)
    path = write_injuries(tmp_path / "i.json", injury("core/src/messy.py", "unformatted_code"))
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "healed"
    assert commit_count(remote) == before + 1
    shown = git(remote, "show", "main:core/src/messy.py")
    assert shown == 'def add(a, b):\n    return a + b\n\n\nx = {"a": 1}\n'
    assert git(remote, "diff", "--name-only", "main~1", "main").split() == ["core/src/messy.py"]
    again, report, _ = heal_cli(capsys, str(path), "--repo", str(work))
    assert again == 0
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "skipped"


def test_a_failing_formatter_exits_1_and_leaves_everything_clean(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Code ruff cannot parse: failed outcome, exit 1, checkout and remote unchanged."""
    remote, work = repo
    (work / "core/src/broken.py").write_text("def (:\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "broken")
    git(work, "push", "-q", "origin", "main")
    digests = tree_digest(work), tree_digest(remote)
    path = write_injuries(tmp_path / "i.json", injury("core/src", "unformatted_code"))
    code, report, _ = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 1
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "failed"
    assert "formatter exited" in report["outcomes"][0]["reason"]
    assert tree_digest(remote) == digests[1]
    assert git(work, "status", "--porcelain", "--ignored") == ""
    assert (work / "core/src/messy.py").read_text() == SEED["core/src/messy.py"]


@pytest.mark.parametrize(
    ("content", "repo_arg", "books", "message"),
    [
        (None, None, PLAYBOOKS, "no such file"),
        ("\n", None, PLAYBOOKS, "empty"),
        ("ok", "/nonexistent/checkout", PLAYBOOKS, "not a git checkout"),
        ("ok", None, Path("/nonexistent/books"), "playbooks directory does not exist"),
    ],
)
def test_usage_and_config_errors_exit_2(
    repo: Repo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    repo_arg: str | None,
    books: Path,
    message: str,
) -> None:
    """Unreadable or empty input, a bad checkout or playbooks dir: exit 2 with a message."""
    path = tmp_path / "i.json"
    if content == "ok":
        write_injuries(path, injury(STUFF))
    elif content is not None:
        path.write_text(content)
    argv = ["heal", str(path), "--repo", repo_arg or str(repo[1]), "--playbooks", str(books)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_repo_and_repo_url_are_mutually_exclusive(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    """Giving both --repo and --repo-url is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(["heal", "x.json", "--repo", str(repo[1]), "--repo-url", str(repo[0])])
    assert exc.value.code == 2


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_human_reports(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Text and Markdown reports name the outcome, the playbook and the files."""
    _, work = repo
    path = write_injuries(tmp_path / "i.json", injury(STUFF), injury("x", auto_heal=False))
    code = main(
        ["heal", str(path), "--repo", str(work), "--playbooks", str(PLAYBOOKS), "--format", fmt]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "HEALED" in out
    assert "ESCALATED" in out
    assert "unauthorized_directory" in out
    assert f"{STUFF}/hack.py" in out
    assert "1 healed" in out or "**1** healed" in out


def test_github_step_summary_and_outputs(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In GitHub Actions the Markdown report goes to the step summary and counts to outputs."""
    _, work = repo
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out.txt"))
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    assert heal_cli(capsys, str(path), "--repo", str(work))[0] == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## auto-healer report" in summary
    assert "| HEALED" in summary
    assert (tmp_path / "out.txt").read_text() == (
        "healed=1\nplanned=0\nskipped=0\nescalated=0\nfailed=0\nrejected=0\n"
    )


def test_markdown_report_escapes_table_cells() -> None:
    """A `|` or newline in a reason cannot break the Markdown table of the step summary."""

    out = render(
        [Outcome(Kind.REJECTED, "bad | path\nsecond line")], "markdown", escalations_to="x"
    )
    row = next(line for line in out.splitlines() if line.startswith("| REJECTED"))
    assert "bad \\| path second line" in row
    assert row.count(" | ") == 3


def test_injuries_file_inside_the_checkout_is_left_alone(
    repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An injuries file in the checkout (an Actions artifact) neither blocks the heal nor is
    committed."""
    remote, work = repo
    injuries = write_injuries(work / "injuries.json", injury("core/src/random_stuff/"))
    code, report, err = heal_cli(capsys, str(injuries), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "healed"
    assert injuries.exists()
    assert "injuries.json" not in remote_files(remote)
