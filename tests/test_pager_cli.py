"""`auto-healer heal` with a pager: real git repositories, a real local receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from auto_healer.cli import main

from tests.conftest import PLAYBOOKS, git, injury, tree_digest, write_injuries
from tests.pager_receiver import Receiver

KEY = "R0UTING-KEY-cli-0123456789"


def dedup(remote: Path) -> str:
    """The dedup key of the test problem: the repository (its remote) is part of it."""
    return f"auto-healer:{remote}:unauthorized_directory:core/src/random_stuff"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """`main()` points structlog at the captured stderr: later tests must not log there."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A real receiver on 127.0.0.1, configured as the pager through the environment."""
    r = Receiver().start()
    monkeypatch.setenv("PAGER_WEBHOOK_URL", r.url)
    monkeypatch.setenv("PAGER_ROUTING_KEY", KEY)
    monkeypatch.setenv("PAGER_BACKOFF_S", "0.01")
    yield r
    r.stop()


def heal(
    checkout: Path, injuries: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any], str]:
    """Run `auto-healer heal` in-process; the exit code, the JSON report and stderr."""
    code = main(
        [
            "heal",
            str(injuries),
            "--repo",
            str(checkout),
            "--playbooks",
            str(PLAYBOOKS),
            "--format",
            "json",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_escalation_pages_once_and_a_later_heal_resolves(
    repo: tuple[Path, Path],
    receiver: Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One trigger for an escalation, a resolve for the later heal; the report hides the key."""
    remote, checkout = repo
    refused = write_injuries(tmp_path / "a.json", injury("core/src/random_stuff/", auto_heal=False))
    code, report, err = heal(checkout, refused, capsys)
    assert code == 0
    [trigger] = [r.json for r in receiver.requests]
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == KEY
    assert trigger["dedup_key"] == dedup(remote)
    assert trigger["payload"]["severity"] == "error"
    assert (
        trigger["payload"]["custom_details"]["reason"] == "auto_heal is false: a human must decide"
    )
    assert trigger["payload"]["custom_details"]["injury_id"] == report["outcomes"][0]["injury_id"]
    assert (
        report["escalations_to"]
        == f"pagerduty webhook at http://127.0.0.1:{receiver.port} (1 sent)"
    )
    assert KEY not in json.dumps(report)
    assert KEY not in err

    healable = write_injuries(tmp_path / "b.json", injury("core/src/random_stuff/"))
    code, report, _ = heal(checkout, healable, capsys)
    assert code == 0
    assert report["outcomes"][0]["outcome"] == "healed"
    assert [r.json for r in receiver.requests][1] == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": dedup(remote),
    }


def test_a_file_of_1000_identical_injuries_pages_once(
    repo: tuple[Path, Path],
    receiver: Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """1,000 identical injuries (distinct timestamps) in one run produce one page."""
    _remote, checkout = repo
    storm = [
        injury("core/src/legacy/", auto_heal=False, timestamp=1735920000.0 + i / 1000)
        for i in range(1000)
    ]
    code, report, _ = heal(checkout, write_injuries(tmp_path / "storm.json", *storm), capsys)
    assert code == 0
    assert report["summary"]["escalated"] == 1000
    assert len(receiver.requests) == 1
    assert "1 sent, 999 grouped" in report["escalations_to"]


def test_dry_run_shows_the_requests_and_sends_nothing(
    repo: tuple[Path, Path],
    receiver: Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--dry-run` puts the exact requests (key redacted) in the report and sends nothing."""
    remote, checkout = repo
    before = (tree_digest(remote), tree_digest(checkout))
    injuries = write_injuries(
        tmp_path / "a.json", injury("core/src/random_stuff/", auto_heal=False)
    )
    code, report, _ = heal(checkout, injuries, capsys, "--dry-run")
    assert code == 0
    [page] = report["pages"]
    assert page["url"] == receiver.url
    assert page["json"]["routing_key"] == "**********"
    assert page["json"]["dedup_key"] == dedup(remote)
    assert "dry-run, nothing sent: 1 planned" in report["escalations_to"]
    assert KEY not in json.dumps(report)
    assert receiver.requests == []
    assert (tree_digest(remote), tree_digest(checkout)) == before
    assert git(checkout, "status", "--porcelain") == ""


def test_without_a_pager_the_report_says_where_escalations_went(
    repo: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without PAGER_WEBHOOK_URL, escalations are listed in the report, which says so."""
    _remote, checkout = repo
    injuries = write_injuries(
        tmp_path / "a.json", injury("core/src/random_stuff/", auto_heal=False)
    )
    code, report, _ = heal(checkout, injuries, capsys)
    assert code == 0
    assert "no pager configured: set PAGER_WEBHOOK_URL" in report["escalations_to"]


def test_pager_down_queues_and_the_next_run_delivers(
    repo: tuple[Path, Path],
    receiver: Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the pager down the page waits in the outbox; the next run delivers it once."""
    remote, checkout = repo
    monkeypatch.setenv("PAGER_ATTEMPTS", "2")
    receiver.stop()
    injuries = write_injuries(
        tmp_path / "a.json", injury("core/src/random_stuff/", auto_heal=False)
    )
    code, report, _ = heal(checkout, injuries, capsys)
    assert code == 0
    assert "1 queued; 1 waiting in" in report["escalations_to"]
    assert "outbox.jsonl for the next run" in report["escalations_to"]
    receiver.start()
    code, report, _ = heal(checkout, injuries, capsys)
    assert code == 0
    assert "1 duplicate" in report["escalations_to"]
    assert len(receiver.delivered) == 1
    assert receiver.delivered[0]["dedup_key"] == dedup(remote)


def test_refused_unmatched_and_invalid_injuries(
    repo: tuple[Path, Path],
    receiver: Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused and unmatched injuries are paged with their reason; invalid payloads are not."""
    _remote, checkout = repo
    traversal = injury("../../etc", severity="critical")
    unknown = injury("core/src/x.py", injury_type="broken_tests", recommended_action="fix")
    invalid = {"injury_type": "unauthorized_directory"}
    path = write_injuries(tmp_path / "a.json", traversal, unknown, invalid)
    code, report, _ = heal(checkout, path, capsys)
    assert code == 1
    assert [o["outcome"] for o in report["outcomes"]] == ["rejected", "escalated", "rejected"]
    refused, unmatched = (r.json["payload"] for r in receiver.requests)
    assert refused["severity"] == "critical"
    assert refused["custom_details"]["outcome"] == "rejected"
    assert refused["custom_details"]["reason"] == report["outcomes"][0]["reason"]
    assert unmatched["custom_details"]["reason"] == "no playbook matches injury_type 'broken_tests'"
    assert unmatched["class"] == "broken_tests"
    assert len(receiver.requests) == 2
