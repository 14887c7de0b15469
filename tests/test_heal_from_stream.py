"""`auto-healer heal --from-stream`: injuries bee-keeper published (plain core publish, no
headers) and a JetStream stream kept, healed once from a start time; real nats-server and git."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.contracts import SUBJECT_INJURY
from auto_healer.demo import SEED, make_repo
from auto_healer.embedded import NatsServer, free_port
from auto_healer.errors import ConfigError
from auto_healer.settings import load_settings
from auto_healer.sources.nats_stream import parse_since, read_stream, since_run
from nats.js.api import StreamConfig

from tests.conftest import heal_cli, injury, remote_files, tree_digest

STREAM = "AURA_INJURIES"
BEFORE = ("core/src/stray_b1/", "core/src/stray_b2/")
AFTER = ("core/src/stray_a1/", "core/src/stray_a2/")


def make_hive_repo(root: Path) -> tuple[Path, Path]:
    """A bare remote and a checkout with four stray directories an audit would flag."""
    return make_repo(root, {**SEED, **{f"{d}junk.py": "x = 1\n" for d in BEFORE + AFTER}})


@pytest.fixture
def hive_repo(tmp_path: Path) -> tuple[Path, Path]:
    """`make_hive_repo` in the test's directory."""
    return make_hive_repo(tmp_path)


async def _publish(url: str, paths: tuple[str, ...], *, stream: bool = True) -> None:
    """Publish like bee-keeper: core NATS, JSON, no headers; optionally create the stream first."""
    nc = await nats.connect(url)
    try:
        if stream:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT_INJURY]))
        for path in paths:
            await nc.publish(SUBJECT_INJURY, json.dumps(injury(path)).encode())
        await nc.flush()
    finally:
        await nc.close()


async def stream_state(url: str, stream: str = STREAM) -> tuple[int, int, int]:
    """Messages, last sequence and consumer count of a stream (default the injury stream)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.state.messages, info.state.last_seq, info.state.consumer_count
    finally:
        await nc.close()


def _wait_stored(url: str, count: int, stream: str = STREAM) -> None:
    """Wait until the stream holds `count` messages (core publishes are not acknowledged)."""
    deadline = time.monotonic() + 5
    while (got := asyncio.run(stream_state(url, stream))[0]) != count:
        assert time.monotonic() < deadline, f"stream holds {got} messages, not {count}"
        time.sleep(0.02)


def publish_before_and_after(url: str) -> str:
    """Two injuries before the returned ISO time, two after it, all in the stream."""
    asyncio.run(_publish(url, BEFORE))
    _wait_stored(url, 2)
    time.sleep(0.05)
    since = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    asyncio.run(_publish(url, AFTER, stream=False))
    _wait_stored(url, 4)
    return since


def _outcomes(report: dict[str, Any] | None) -> list[tuple[str, str]]:
    assert report is not None
    return [(o["outcome"], o["injury"]["affected_path"]) for o in report["outcomes"]]


def test_heals_exactly_the_injuries_after_since_then_nothing_more(
    nats_server: NatsServer, hive_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the two injuries published after --since are healed; a rerun finds them healthy."""
    remote, work = hive_repo
    since = publish_before_and_after(nats_server.url)
    args = ("--from-stream", "--since", since, "--nats-url", nats_server.url, "--repo", str(work))
    code, report, err = heal_cli(capsys, *args)
    assert code == 0, err
    assert _outcomes(report) == [("healed", AFTER[0]), ("healed", AFTER[1])]
    files = remote_files(remote)
    assert not [f for f in files if f.startswith(AFTER)]
    assert {f"{d}junk.py" for d in BEFORE} <= set(files)
    consumers = asyncio.run(stream_state(nats_server.url))[2]
    assert consumers == 0  # the read's own consumer is gone

    code, report, err = heal_cli(capsys, *args)
    assert code == 0, err
    assert [o for o, _ in _outcomes(report)] == ["skipped", "skipped"]
    assert remote_files(remote) == files


def test_dry_run_changes_neither_the_remote_nor_the_stream(
    nats_server: NatsServer, hive_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run plans the two later injuries; remote, checkout and stream stay as they were."""
    remote, work = hive_repo
    since = publish_before_and_after(nats_server.url)
    before = (tree_digest(remote), tree_digest(work), asyncio.run(stream_state(nats_server.url)))
    code, report, err = heal_cli(
        capsys, "--from-stream", "--since", since, "--dry-run", "--repo", str(work),
        "--nats-url", nats_server.url,
    )  # fmt: skip
    assert code == 0, err
    assert _outcomes(report) == [("planned", AFTER[0]), ("planned", AFTER[1])]
    after = (tree_digest(remote), tree_digest(work), asyncio.run(stream_state(nats_server.url)))
    assert after == before


def test_since_run_reads_github_run_started_at(
    nats_server: NatsServer,
    hive_repo: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--since-run takes the start from GITHUB_RUN_STARTED_AT; NATS_URL comes from the env."""
    _, work = hive_repo
    monkeypatch.setenv("GITHUB_RUN_STARTED_AT", publish_before_and_after(nats_server.url))
    monkeypatch.setenv("NATS_URL", nats_server.url)
    code, report, err = heal_cli(capsys, "--from-stream", "--since-run", "--repo", str(work))
    assert code == 0, err
    assert [p for _, p in _outcomes(report)] == list(AFTER)


def test_no_stream_is_a_one_line_error(
    nats_server: NatsServer, hive_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a stream capturing aura.hive.injury: exit 2 and one line saying so."""
    _, work = hive_repo
    args = ("--from-stream", "--since", "1h", "--nats-url", nats_server.url, "--repo", str(work))
    code, report, err = heal_cli(capsys, *args)
    assert (code, report) == (2, None)
    [line] = err.splitlines()
    assert line.startswith("auto-healer: error: no JetStream stream captures aura.hive.injury")
    code, _, err = heal_cli(capsys, *args, "--stream", "NOPE")
    assert code == 2
    assert err.splitlines() == ["auto-healer: error: stream 'NOPE' does not exist"]


def test_an_unreachable_server_fails_within_seconds(
    hive_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listening: exit 2 within a few seconds, one error line naming the server."""
    _, work = hive_repo
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    code, report, err = heal_cli(
        capsys, "--from-stream", "--since", "1h", "--nats-url", url, "--repo", str(work)
    )
    assert time.monotonic() - started < 2
    assert (code, report) == (2, None)
    [error] = err.splitlines()
    assert error.startswith(f"auto-healer: error: cannot connect to NATS at {url}: ")
    assert "Connect call failed" in error


def test_a_server_without_jetstream_is_a_clear_error(
    tmp_path: Path, hive_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A NATS without JetStream (the real Hive chart's default): exit 2, saying so."""
    _, work = hive_repo
    with NatsServer(tmp_path / "plain", jetstream=False) as plain:
        code, _, err = heal_cli(
            capsys, "--from-stream", "--since", "1h", "--nats-url", plain.url, "--repo", str(work)
        )
    assert code == 2
    assert err.splitlines() == [f"auto-healer: error: NATS at {plain.url} has no JetStream: "
                                "no stream can hold injuries"]  # fmt: skip


@pytest.mark.parametrize("value", ["yesterday", "15x", "2024-13-01T00:00:00Z", "", "1e999"])
def test_a_bad_since_exits_2_naming_the_value(
    value: str, hive_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A --since that is no time: exit 2, the value named, before any connection is tried."""
    _, work = hive_repo
    code, report, err = heal_cli(capsys, "--from-stream", "--since", value, "--repo", str(work))
    assert (code, report) == (2, None)
    assert err.splitlines() == [
        f"auto-healer: error: --since {value!r}: not an ISO-8601 time, a Unix epoch or a "
        "duration like 15m or 2h"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        [],  # neither a file nor the stream
        ["i.json", "--from-stream", "--since", "1h"],  # both
        ["--from-stream", "--since", "1h", "--since-run"],
    ],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A file and --from-stream exclude each other, one is needed; so are --since/--since-run."""
    with pytest.raises(SystemExit) as exc:
        heal_cli(capsys, *argv)
    assert exc.value.code == 2
    assert "error: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from-stream"], "--from-stream needs --since TIME or --since-run"),
        (["i.json", "--since", "1h"], "--since: only with --from-stream"),
        (["i.json", "--stream", "S", "--nats-url", "nats://x"], "--stream, --nats-url: only"),
    ],
)
def test_stream_flags_need_each_other(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from-stream needs a start time, and the stream's flags mean nothing with a file."""
    code, _, err = heal_cli(capsys, *argv)
    assert code == 2
    assert err.startswith(f"auto-healer: error: {message}")


def test_since_run_without_the_variable_says_how_to_set_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--since-run with no GITHUB_RUN_STARTED_AT: exit 2, naming the variable and the event."""
    monkeypatch.delenv("GITHUB_RUN_STARTED_AT", raising=False)
    code, _, err = heal_cli(capsys, "--from-stream", "--since-run")
    assert code == 2
    assert "GITHUB_RUN_STARTED_AT" in err
    assert "github.event.workflow_run.run_started_at" in err


NOW = datetime(2025, 1, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-03T11:00:00Z", datetime(2025, 1, 3, 11, 0, tzinfo=UTC)),
        ("2025-01-03T13:00:00+02:00", datetime(2025, 1, 3, 11, 0, tzinfo=UTC)),
        ("2025-01-03 11:00:00", datetime(2025, 1, 3, 11, 0, tzinfo=UTC)),  # no zone = UTC
        ("1735902000", datetime(2025, 1, 3, 11, 0, tzinfo=UTC)),
        ("1735902000.5", datetime(2025, 1, 3, 11, 0, 0, 500000, tzinfo=UTC)),
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("90s", NOW - timedelta(seconds=90)),
        ("1d", NOW - timedelta(days=1)),
    ],
)
def test_parse_since_forms(text: str, expected: datetime) -> None:
    """ISO-8601 (with or without a zone), epoch seconds and durations all give a UTC time."""
    assert parse_since(text, now=NOW) == expected


def test_since_run_parses_the_payload_time() -> None:
    """GitHub's run_started_at form (`...Z`) is read; a garbled one is a config error."""
    assert since_run({"GITHUB_RUN_STARTED_AT": "2025-01-03T11:00:00Z"}) == datetime(
        2025, 1, 3, 11, tzinfo=UTC
    )
    with pytest.raises(ConfigError, match="GITHUB_RUN_STARTED_AT='soon' is not a time"):
        since_run({"GITHUB_RUN_STARTED_AT": "soon"})


def test_messages_pass_through_as_published_and_other_subjects_are_left(
    nats_server: NatsServer,
) -> None:
    """bee.Keeper's envelope comes back as its exact bytes with no headers and the stream time;
    a wider stream's other subjects (even its last message) are not read, and the read ends."""
    envelope = json.dumps(
        {"agent": "bee.Keeper", "injuries": ["GitHub: Failed to post."], "timestamp": 81234.5}
    ).encode()

    async def publish() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().add_stream(StreamConfig(name="HIVE", subjects=["aura.hive.>"]))
            await nc.publish("aura.hive.audit", b'{"is_pure": true}')
            await nc.publish(SUBJECT_INJURY, envelope)
            await nc.publish("aura.hive.audit", b'{"is_pure": false}')
            await nc.flush()
        finally:
            await nc.close()

    started = time.time()
    asyncio.run(publish())
    _wait_stored(nats_server.url, 3, "HIVE")
    [delivery] = read_stream(load_settings().nats, nats_server.url, since=parse_since("1m"))
    assert (delivery.subject, delivery.data, dict(delivery.headers)) == (
        SUBJECT_INJURY, envelope, {}
    )  # fmt: skip
    assert started - 1 <= delivery.received_at <= time.time()
    assert delivery.max_attempts is None


def test_an_envelope_published_during_the_run_heals_each_documented_entry(
    nats_server: NatsServer, hive_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """bee-keeper's envelope, published plainly after --since: each injury object is healed
    and its free-text entry escalated, from the stream, in one run."""
    remote, work = hive_repo
    asyncio.run(_publish(nats_server.url, ()))
    since = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    envelope = {
        "agent": "bee.Keeper",
        "timestamp": 812.5,
        "injuries": [injury(AFTER[0]), injury(AFTER[1]), "GitHub: Failed to post a comment."],
    }

    async def publish() -> None:
        nc = await nats.connect(nats_server.url)
        await nc.publish(SUBJECT_INJURY, json.dumps(envelope).encode())
        await nc.flush()
        await nc.close()

    asyncio.run(publish())
    _wait_stored(nats_server.url, 1)
    args = ("--from-stream", "--since", since, "--nats-url", nats_server.url, "--repo", str(work))
    code, report, err = heal_cli(capsys, *args)
    assert code == 0, err
    assert report is not None
    assert [o["outcome"] for o in report["outcomes"]] == ["healed", "healed", "escalated"]
    assert report["outcomes"][2]["injury"]["description"] == "GitHub: Failed to post a comment."
    assert not [f for f in remote_files(remote) if f.startswith(AFTER)]
