"""Playbooks: load-time validation with file and line, matching, JSON Schema, validate/match CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from auto_healer.cli import main
from auto_healer.contracts import parse_injury_obj
from auto_healer.errors import ConfigError
from auto_healer.playbooks import load_playbook, load_playbooks, playbook_json_schema

from tests.conftest import PLAYBOOKS, ROOT, injury

GOOD = """\
name: good
match:
  injury_type: unauthorized_directory
steps:
  - action: delete_directory
    with:
      max_files: 10
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_playbooks_load() -> None:
    """The two shipped playbooks load and claim their injury types."""
    books = load_playbooks(PLAYBOOKS)
    assert sorted(p.name for p in books) == ["unauthorized_directory", "unformatted_code"]
    matched = books.match(parse_injury_obj(injury("core/x")).injury)
    assert matched is not None
    assert matched.name == "unauthorized_directory"
    assert "docs/**" in matched.protected_globs
    assert ".git/**" in matched.protected_globs


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (GOOD + "stepz: []\n", 8, "field 'stepz': unknown key; did you mean 'steps'?"),
        (
            GOOD.replace("delete_directory", "delete_dir"),
            5,
            "unknown action 'delete_dir'; did you mean 'delete_directory'?",
        ),
        (
            GOOD.replace("max_files", "max_file"),
            5,
            "option 'max_file' of delete_directory: unknown key; did you mean 'max_files'?",
        ),
        (GOOD.replace("10", "lots"), 5, "option 'max_files' of delete_directory"),
        (GOOD + "retry: {attempts: 0}\n", 8, "field 'retry.attempts'"),
        (
            GOOD.replace(
                "  injury_type: unauthorized_directory",
                "  injury_type: unauthorized_directory\n  affected_path: 'a/**b'",
            ),
            4,
            "field 'match.affected_path'",
        ),
        (GOOD + "protected: ['docs/[x']\n", 8, "unclosed '['"),
        (GOOD + "commit: {message: 'fix {path}'}\n", 8, "unknown placeholder {path}"),
        (GOOD + "commit: {message: 'fix {affected_path!r}'}\n", 8, "unknown placeholder"),
        (GOOD + "on_failure: ignore\n", 8, "field 'on_failure'"),
        (GOOD + "name: twice\n", 8, "duplicate key 'name'"),
        (GOOD + "steps: [\n", 9, "invalid YAML"),
        (GOOD.replace("name: good", "name: Bad Name"), 1, "field 'name'"),
        (GOOD + "breaker:\n  max_heals: 0\n  window_s: 60\n", 9, "field 'breaker.max_heals'"),
        (GOOD + "breaker:\n  max_heals: 5\n  window_s: 1.5\n", 10, "field 'breaker.window_s'"),
        (GOOD + "breaker:\n  max_heals: '5'\n  window_s: 60\n", 9, "valid integer"),
        (GOOD + "breaker:\n  max_heals: 5\n", 8, "field 'breaker.window_s': field required"),
        (GOOD + "breaker: {max_heals: 5, window_s: 60, for: 2}\n", 8, "field 'breaker.for'"),
    ],
)
def test_bad_playbook_is_an_error_naming_file_and_line(
    tmp_path: Path, text: str, line: int, expected: str
) -> None:
    """Every load-time problem is a `ConfigError` with `file:line` and a clear message."""
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_playbook(path)
    message = str(exc.value)
    assert f"{path}:{line}:" in message
    assert expected in message


@pytest.mark.parametrize("text", ["", "- a list\n", "just text\n"])
def test_a_playbook_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    """An empty file or a non-mapping document is an error naming the file."""
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(ConfigError, match=f"{path}: a playbook must be a YAML mapping"):
        load_playbook(path)


def test_two_playbooks_claiming_the_same_injuries_are_an_error(tmp_path: Path) -> None:
    """Overlapping `match` blocks are an error naming both files and the `match` line."""
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD.replace("name: good", "name: other"))
    with pytest.raises(ConfigError) as exc:
        load_playbooks(tmp_path)
    message = str(exc.value)
    assert (
        f"{tmp_path / 'b.yaml'}:2: playbook 'other' claims the same injuries as 'good'" in message
    )
    assert f"{tmp_path / 'a.yaml'}:2" in message


def test_duplicate_names_are_an_error(tmp_path: Path) -> None:
    """Two playbooks with one name are an error naming both files."""
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD.replace("unauthorized_directory", "other_type"))
    with pytest.raises(ConfigError, match="name 'good' is already used by"):
        load_playbooks(tmp_path)


def test_disjoint_claims_may_share_an_injury_type(tmp_path: Path) -> None:
    """Same injury_type with disjoint severities or paths is fine; each gets its own injuries."""
    write(tmp_path, "a.yaml", GOOD.replace("steps:", "  severity: [low, medium]\nsteps:"))
    write(
        tmp_path,
        "b.yaml",
        GOOD.replace("name: good", "name: urgent").replace(
            "steps:", "  severity: [high, critical]\nsteps:"
        ),
    )
    write(
        tmp_path,
        "c.yaml",
        GOOD.replace("name: good", "name: docs").replace(
            "  injury_type: unauthorized_directory",
            "  injury_type: other\n  affected_path: docs/**",
        ),
    )
    books = load_playbooks(tmp_path)
    low = parse_injury_obj(injury("x", severity="low")).injury
    high = parse_injury_obj(injury("x", severity="critical")).injury
    assert books.match(low).name == "good"  # type: ignore[union-attr]
    assert books.match(high).name == "urgent"  # type: ignore[union-attr]
    docs = parse_injury_obj(injury("./docs//a/", injury_type="other")).injury
    assert books.match(docs).name == "docs"  # type: ignore[union-attr]
    assert books.match(parse_injury_obj(injury("core", injury_type="other")).injury) is None


def test_match_honours_recommended_action() -> None:
    """The shipped delete playbook only claims injuries recommending delete_directory."""
    books = load_playbooks(PLAYBOOKS)
    other = parse_injury_obj(injury("x", recommended_action="format_code")).injury
    assert books.match(other) is None


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_a_directory_without_playbooks_is_an_error(tmp_path: Path, setup: str) -> None:
    """A missing or empty playbooks directory is a configuration error."""
    directory = tmp_path / "books"
    if setup == "empty":
        directory.mkdir()
    with pytest.raises(ConfigError, match="playbooks"):
        load_playbooks(directory)


def test_commit_message_neutralises_control_characters() -> None:
    """A newline in the affected path cannot forge trailers in the commit message."""
    book = load_playbooks(PLAYBOOKS).match(parse_injury_obj(injury("a")).injury)
    assert book is not None
    parsed = parse_injury_obj(injury("a\nHealed-By: evil"))
    assert "\n" not in book.commit_message(parsed)


def test_schema_file_equals_the_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`schema/playbook.schema.json` is exactly what `auto-healer schema` prints."""
    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == (ROOT / "schema" / "playbook.schema.json").read_text()
    assert json.loads(printed) == playbook_json_schema()


def test_shipped_playbooks_validate_against_the_schema() -> None:
    """Every shipped playbook is valid under the JSON Schema (draft 2020-12)."""
    schema = json.loads((ROOT / "schema" / "playbook.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    for path in sorted(PLAYBOOKS.glob("*.yaml")):
        validator.validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "change",
    [
        {"stepz": []},
        {"steps": [{"action": "delete_dir"}]},
        {"steps": [{"action": "delete_directory", "with": {"max_file": 1}}]},
        {"steps": [{"action": "format_code", "with": {"formatter": "prettier"}}]},
        {"commit": {"push_to": "main"}},
    ],
)
def test_schema_rejects_what_the_loader_rejects(change: dict[str, object]) -> None:
    """Editors see the same errors: unknown keys, actions and options fail the schema."""
    doc = {**yaml.safe_load(GOOD), **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, playbook_json_schema())


def test_validate_command_lists_the_playbooks(capsys: pytest.CaptureFixture[str]) -> None:
    """`auto-healer validate --playbooks DIR` exits 0 and lists each playbook."""
    assert main(["validate", "--playbooks", str(PLAYBOOKS)]) == 0
    out = capsys.readouterr().out
    assert "unauthorized_directory" in out
    assert "2 playbooks valid" in out


def test_validate_command_reports_errors_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto-healer validate` on a bad playbook exits 2 with file and line on stderr."""
    path = write(tmp_path, "p.yaml", GOOD.replace("delete_directory", "nuke"))
    assert main(["validate", "--playbooks", str(tmp_path)]) == 2
    assert f"{path}:5:" in capsys.readouterr().err


def test_match_command_exits_0_when_a_playbook_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto-healer match INJURY.json` prints the playbook and exits 0."""
    path = tmp_path / "i.json"
    path.write_text(json.dumps(injury("core/x")))
    assert main(["match", str(path), "--playbooks", str(PLAYBOOKS)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["playbook"] == "unauthorized_directory"
    assert doc["steps"] == ["delete_directory"]


def test_match_command_exits_1_when_none_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto-healer match` exits 1 and says so when no playbook claims the injury."""
    path = tmp_path / "i.json"
    path.write_text(json.dumps(injury("x", injury_type="mystery")))
    assert main(["match", str(path), "--playbooks", str(PLAYBOOKS)]) == 1
    assert "no playbook matches" in capsys.readouterr().out


def test_match_command_rejects_an_invalid_injury_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto-healer match` on an invalid injury exits 2 naming the field."""
    path = tmp_path / "i.json"
    path.write_text(json.dumps({"injury_type": "x"}))
    assert main(["match", str(path), "--playbooks", str(PLAYBOOKS)]) == 2
    assert "field 'timestamp'" in capsys.readouterr().err


def test_approval_required_is_short_for_required_true(tmp_path: Path) -> None:
    """`approval: required` and `approval: {required: true, expires_s: N}` both load."""
    from auto_healer.playbooks import load_playbook

    base = "name: x\nmatch:\n  injury_type: t\nsteps:\n  - action: delete_directory\n"
    short, long = tmp_path / "a.yaml", tmp_path / "b.yaml"
    short.write_text(base + "approval: required\n")
    long.write_text(base + "approval:\n  required: true\n  expires_s: 60\n")
    a, b = load_playbook(short), load_playbook(long)
    assert a.approval is not None and (a.approval.required, a.approval.expires_s) == (True, 86400)
    assert b.approval is not None and b.approval.expires_s == 60


@pytest.mark.parametrize(("global_max", "ok"), [(10, True), (3, False), (0, True)])
def test_a_playbook_breaker_may_only_lower_the_global_limit(
    tmp_path: Path, global_max: int, ok: bool
) -> None:
    """`breaker.max_heals` above BREAKER_MAX_HEALS is an error naming file, line and field;
    with the breaker off (0) the playbook's limit is the only one."""
    path = write(tmp_path, "p.yaml", GOOD + "breaker:\n  window_s: 60\n  max_heals: 5\n")
    if ok:
        (book,) = load_playbooks(tmp_path, breaker_max_heals=global_max)
        assert book.breaker is not None
        assert (book.breaker.max_heals, book.breaker.window_s) == (5, 60)
        return
    with pytest.raises(ConfigError) as exc:
        load_playbooks(tmp_path, breaker_max_heals=global_max)
    assert str(exc.value) == (
        f"{path}:10: field 'breaker.max_heals': 5 is above BREAKER_MAX_HEALS=3; a playbook may "
        "only lower the limit"
    )
