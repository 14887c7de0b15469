"""Hostile CLI input: the real `auto-healer` process, fed bytes it must refuse in one line."""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import pytest
from auto_healer.contracts import ParsedInjury
from auto_healer.embedded import NatsServer
from auto_healer.sources.files import read_injuries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PLAYBOOKS, injury

Repo = tuple[Path, Path]
GOOD = json.dumps(injury("core/src/random_stuff")).encode()


def cli(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """Run `python -m auto_healer ARGS` with `stdin`; text stdout/stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "auto_healer", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Assert exit 2 and exactly one `auto-healer: error:` line on stderr naming `fragments`."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("auto-healer: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def commands(target: str | Path, repo: Repo) -> list[list[str | Path]]:
    """`match`, `heal --dry-run` and `publish` on the same input."""
    return [
        ["match", target, "--playbooks", PLAYBOOKS],
        ["heal", target, "--repo", repo[1], "--dry-run", "--playbooks", PLAYBOOKS],
        ["publish", target, "--nats-url", "nats://127.0.0.1:9"],
    ]


HOSTILE = {
    "binary": (b"\x80\x81\xfe garbage", "not UTF-8 text (byte 0x80 at offset 0)"),
    "invalid-utf8-later": (b'{"a": "ok\xc3("}', "not UTF-8 text (byte 0xc3 at offset 9)"),
    "utf16": ('{"a": 1}'.encode("utf-16"), "UTF-16"),
    "utf16-no-bom": ('{"a": 1}'.encode("utf-16-le"), "NUL byte at offset 1"),
    "nul": (b"\0\0\0", "NUL byte at offset 0"),
    "empty": (b"", "empty"),
    "blank": (b" \n\r\n\t", "empty"),
    "bom-only": (codecs.BOM_UTF8, "empty"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_stdin_is_one_line_exit_2_for_every_command(name: str, repo: Repo) -> None:
    """Binary, non-UTF-8, UTF-16, NUL or empty stdin: exit 2, one line naming stdin, no trace."""
    data, problem = HOSTILE[name]
    for argv in commands("-", repo):
        one_line_error(cli(*argv, stdin=data), "stdin: ", problem)


@pytest.mark.parametrize("name", ["binary", "utf16", "nul", "empty"])
def test_hostile_file_is_one_line_exit_2_naming_the_file(
    name: str, repo: Repo, tmp_path: Path
) -> None:
    """The same bytes in a file: the error names the file."""
    data, problem = HOSTILE[name]
    path = tmp_path / "injuries.json"
    path.write_bytes(data)
    for argv in commands(path, repo):
        one_line_error(cli(*argv), f"{path}: ", problem)


def test_missing_file_and_directory_are_named(repo: Repo, tmp_path: Path) -> None:
    """A file that doesn't exist, or a directory, is a one-line usage error."""
    for argv in commands(tmp_path / "nope.json", repo):
        one_line_error(cli(*argv), "nope.json: no such file")
    for argv in commands(tmp_path, repo):
        one_line_error(cli(*argv), f"{tmp_path}: is a directory")


def test_a_utf8_bom_is_dropped(repo: Repo, tmp_path: Path) -> None:
    """A UTF-8 BOM (Windows editors) is accepted, by match and by heal."""
    bom = codecs.BOM_UTF8 + GOOD
    match = cli("match", "-", "--playbooks", PLAYBOOKS, stdin=bom)
    assert match.returncode == 0, match.stderr
    assert json.loads(match.stdout)["playbook"] == "unauthorized_directory"
    path = tmp_path / "i.jsonl"
    path.write_bytes(bom + b"\r\n" + GOOD + b"\r\n")
    heal = cli("heal", path, "--repo", repo[1], "--dry-run", "--playbooks", PLAYBOOKS)
    assert heal.returncode == 0, heal.stderr
    assert [o["outcome"] for o in json.loads(heal.stdout)["outcomes"]] == ["planned"] * 2


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_a_unicode_line_break_inside_a_string_stays_in_its_jsonl_record(
    sep: str, repo: Repo, tmp_path: Path
) -> None:
    """JSON Lines split on \\n only: a raw U+2028/U+2029/U+0085 in a value is not a new line."""
    first = json.dumps(injury("core/src/random_stuff", note=f"a{sep}b"), ensure_ascii=False)
    second = json.dumps(injury("core/src/other"))
    assert sep in first
    path = tmp_path / "i.jsonl"
    path.write_text(first + "\n" + second + "\n", encoding="utf-8")
    proc = cli("heal", path, "--repo", repo[1], "--dry-run", "--playbooks", PLAYBOOKS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcomes = json.loads(proc.stdout)["outcomes"]
    assert [o["outcome"] for o in outcomes] == ["planned", "skipped"]
    assert outcomes[0]["injury"]["note"] == f"a{sep}b"


def test_read_injuries_splits_on_newline_only() -> None:
    """`read_injuries` keeps a U+2028 record whole and numbers lines by \\n."""
    one = json.dumps(injury("a", note="x\u2028y"), ensure_ascii=False)
    entries = read_injuries(f"{one}\r\n\n{{broken\n")
    assert isinstance(entries[0], ParsedInjury)
    assert entries[0].raw["note"] == "x\u2028y"
    assert len(entries) == 2
    assert str(entries[1]).startswith("line 3: ")


def test_lone_surrogates_nan_and_deep_nesting_are_refused_per_entry(
    repo: Repo, tmp_path: Path
) -> None:
    """A lone surrogate in a free field is an injury like any other (its id stays stable);
    what an injury can't hold (a surrogate path, NaN, absurd nesting) is rejected by line."""
    lines = [
        GOOD.decode(),
        GOOD.decode()[:-1] + ', "note": "\\udc80"}',
        GOOD.decode().replace('"core/src/random_stuff"', '"core/\\ud800"'),
        GOOD.decode()[:-1] + ', "n": NaN}',
        GOOD.decode()[:-1] + ', "deep": ' + "[" * 10_000 + "]" * 10_000 + "}",
    ]
    path = tmp_path / "i.jsonl"
    path.write_text("\n".join(lines))
    proc = cli("heal", path, "--repo", repo[1], "--dry-run", "--playbooks", PLAYBOOKS)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stderr
    outcomes = json.loads(proc.stdout)["outcomes"]
    # line 2 is the same problem as line 1 within the playbook's throttle window
    assert [o["outcome"] for o in outcomes] == ["planned", "skipped"] + ["rejected"] * 3
    assert outcomes[1]["injury"]["note"] == "\udc80"
    assert [o["reason"].split(":")[0] for o in outcomes[2:]] == [f"line {n}" for n in (3, 4, 5)]
    matched = cli("match", "-", "--playbooks", PLAYBOOKS, stdin=lines[1].encode())
    assert matched.returncode == 0, matched.stderr
    for line in lines[2:]:
        one_line_error(cli("match", "-", "--playbooks", PLAYBOOKS, stdin=line.encode()), "stdin: ")


def test_a_50mb_injury_is_refused_before_it_reaches_nats(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """One 50 MB injury in a JSON list is over the 1 MiB payload limit: refused, not a crash."""
    path = tmp_path / "big.json"
    path.write_text(json.dumps([injury("core/src/x", blob="x" * 50_000_000)]))
    proc = cli("publish", path, "--nats-url", nats_server.url)
    one_line_error(proc, "entry 1: ", "over the 1048576 limit")
    one_line_error(cli("match", path, "--playbooks", PLAYBOOKS), f"{path}: ", "over the")


def test_input_over_64_mib_is_refused(repo: Repo) -> None:
    """More than 64 MiB on stdin is refused without being read to the end."""
    proc = cli("match", "-", "--playbooks", PLAYBOOKS, stdin=b" " * (64 * 1024 * 1024 + 1))
    one_line_error(proc, "stdin: larger than the 64 MiB input limit")


@settings(  # a process per example; the in-process invariants take thousands of inputs
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=64))
def test_match_survives_any_bytes_on_stdin(data: bytes) -> None:
    """Any bytes on `match -`: exit 0/1, or 2 with one error line; never a traceback."""
    proc = cli("match", "-", "--playbooks", PLAYBOOKS, stdin=data)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        one_line_error(proc)
    else:
        assert proc.returncode in (0, 1), proc.stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"name: x\n\x80\x81", "byte 0x80"),
        (b"name: x\n\0\0", "#x0000"),
    ],
)
def test_a_binary_playbook_is_one_line_naming_the_file(
    content: bytes, problem: str, tmp_path: Path
) -> None:
    """`validate` on a binary playbook: exit 2, one line naming the file."""
    (tmp_path / "bad.yaml").write_bytes(content)
    one_line_error(cli("validate", "--playbooks", tmp_path), f"{tmp_path / 'bad.yaml'}: ", problem)
