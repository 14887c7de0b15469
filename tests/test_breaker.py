"""The blast-radius breaker and the controls mirror on a real nats-server's KV."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import nats
import pytest
from auto_healer import breaker, controls
from auto_healer.embedded import NatsServer
from auto_healer.kvcell import KvCell

from tests.agent_support import wait_until

pytestmark = pytest.mark.timeout(60)
REPO = "git@example.com:org/repo.git"


async def _cells(url: str) -> tuple[object, KvCell]:
    nc = await nats.connect(url)
    return nc, await KvCell.open(nc.jetstream(), controls.BUCKET_CONTROLS)


async def test_two_clients_racing_share_one_count_and_one_trip(nats_server: NatsServer) -> None:
    """20 reservations from two connections against 5: 5 go, exactly one trips, 14 find it open."""
    (nc_a, a), (nc_b, b) = await _cells(nats_server.url), await _cells(nats_server.url)
    limits = breaker.Limits(max_heals=5, window_s=600)
    try:
        verdicts = await asyncio.gather(
            *[breaker.reserve(a if i % 2 else b, REPO, limits) for i in range(20)]
        )
        assert Counter(verdicts) == {"go": 5, "tripped": 1, "open": 14}
        state = await breaker.status(a, REPO)
        assert state is not None and (state.open, state.count, state.held) == (True, 5, 15)
        was = await breaker.reset(b, REPO)
        assert was is not None and was.open
        assert await breaker.reserve(a, REPO, limits) is breaker.Verdict.GO
    finally:
        await nc_a.close()  # type: ignore[attr-defined]
        await nc_b.close()  # type: ignore[attr-defined]


async def test_a_place_not_healed_is_given_back_and_the_window_ends(
    nats_server: NatsServer,
) -> None:
    """A released place is free again; after the window an open breaker closes by itself,
    unless it must be reset by hand."""
    nc, cells = await _cells(nats_server.url)
    limits = breaker.Limits(max_heals=1, window_s=10)
    try:
        assert await breaker.reserve(cells, REPO, limits, now=1000.0) is breaker.Verdict.GO
        await breaker.release(cells, REPO)
        assert await breaker.reserve(cells, REPO, limits, now=1001.0) is breaker.Verdict.GO
        assert await breaker.reserve(cells, REPO, limits, now=1002.0) is breaker.Verdict.TRIPPED
        found = await breaker.status(cells, REPO)
        assert found is not None
        doc = found.__dict__
        assert breaker.is_open(doc, limits, now=1009.0)
        assert not breaker.is_open(doc, limits, now=1010.0)
        manual = breaker.Limits(max_heals=1, window_s=10, manual_reset=True)
        assert breaker.is_open(doc, manual, now=5000.0)
        assert await breaker.reserve(cells, REPO, manual, now=5000.0) is breaker.Verdict.OPEN
        assert await breaker.reserve(cells, REPO, limits, now=5000.0) is breaker.Verdict.GO
        assert not breaker.is_open(doc, breaker.Limits(max_heals=0, window_s=10), now=1005.0)
        off = breaker.Limits(max_heals=0, window_s=10)
        assert await breaker.reserve(cells, "other", off) is breaker.Verdict.GO
        assert await breaker.status(cells, "other") is None  # off: nothing is counted
    finally:
        await nc.close()


async def test_the_mirror_sees_a_pause_and_its_lifting(nats_server: NatsServer) -> None:
    """A replica's mirror follows pause and resume (everything, or one playbook) from the KV."""
    nc, cells = await _cells(nats_server.url)
    await controls.pause(cells, by="ops", reason="before", playbook=None)  # set before the watch
    mirror = controls.Controls(cells)
    watching = asyncio.create_task(mirror.watch())
    try:
        await asyncio.wait_for(mirror.synced.wait(), 5)
        found = mirror.paused("any")
        assert found is not None and (found.by, found.reason) == ("ops", "before")
        await controls.resume(cells, playbook=None)
        await wait_until(lambda: mirror.paused("any") is None, 2, "the resume")
        await controls.pause(cells, by="ops", reason="", playbook="fmt")
        await wait_until(lambda: mirror.paused("fmt") is not None, 2, "the playbook's pause")
        assert mirror.paused("other") is None and mirror.paused() is None
        assert mirror.details()["paused_playbooks"] == ["fmt"]
    finally:
        watching.cancel()
        await nc.close()


async def test_a_burst_of_distinct_heals_through_one_guard_all_get_a_place(
    nats_server: NatsServer,
) -> None:
    """300 distinct injuries at once through one replica's guard: every heal gets its breaker
    place (no compare-and-set race past the retry bound), and the count is exact."""
    from auto_healer.contracts import parse_injury_obj
    from auto_healer.guard import Guard
    from auto_healer.outcomes import Kind, Outcome
    from auto_healer.playbooks import load_playbooks

    from tests.conftest import PLAYBOOKS, injury

    nc, cells = await _cells(nats_server.url)
    try:
        limits = breaker.Limits(max_heals=1000, window_s=600)
        guard = Guard(
            controls.Controls(cells), load_playbooks(Path(PLAYBOOKS)), repo="r", limits=limits
        )

        async def heal(parsed: object) -> Outcome:
            await asyncio.sleep(0.01)
            return Outcome(Kind.HEALED, "ok", injury=parsed, commit="c" * 40)  # type: ignore[arg-type]

        injuries = [parse_injury_obj(injury(f"core/src/d{i}/")) for i in range(300)]
        outcomes = await asyncio.gather(*(guard.handle(p, heal) for p in injuries))
        assert Counter(o.kind for o in outcomes) == {Kind.HEALED: 300}
        state = await breaker.status(cells, "r")
        assert state is not None
        assert state.count == 300
    finally:
        await nc.close()  # type: ignore[attr-defined]


async def test_a_playbook_breaker_lowers_the_limit_for_its_own_heals(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """`breaker: {max_heals: 2}` in a playbook (global 100): its 3rd heal in the window trips its
    own breaker (held, paged once, the global count untouched by it); `reset-breaker REPO
    --playbook NAME` lets it heal."""
    import subprocess
    import sys

    from auto_healer.outcomes import Kind

    from tests.agent_support import remote_tree, seed_dirs
    from tests.approval_support import Replica, approval_playbooks, parsed

    tmp, (remote, work) = tmp_path, repo
    seed_dirs(work, ["d0", "d1", "d2"])
    books = approval_playbooks(tmp, extra="breaker:\n  max_heals: 2\n  window_s: 600\n")
    async with Replica(tmp, "a", nats_server.url, remote, playbooks=books) as a:
        got = [await a.handle(parsed(f"core/src/d{i}/")) for i in range(3)]
        assert [o.kind for o in got] == [Kind.HEALED, Kind.HEALED, Kind.HELD], got[2].reason
        assert got[2].page_held is True
        assert "breaker of playbook unauthorized_directory open" in got[2].reason
        repo_key = a.healer.repo_key
        assert f"reset-breaker {repo_key} --playbook unauthorized_directory" in got[2].reason
        whole = await breaker.status(a.cells, repo_key)
        assert whole is not None and (whole.count, whole.open) == (2, False)
        again = await a.handle(parsed("core/src/d2/", timestamp=1735920001.0))
        assert (again.kind, again.page_held) == (Kind.HELD, False)  # one page per trip
        out = subprocess.run(
            [sys.executable, "-m", "auto_healer", "reset-breaker", repo_key, "--playbook",
             "unauthorized_directory", "--nats-url", nats_server.url],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert "playbook unauthorized_directory's breaker" in out and "it was open" in out
        healed = await a.handle(parsed("core/src/d2/", timestamp=1735920002.0))
        assert healed.kind is Kind.HEALED, healed.reason
        assert not any("/d2/" in p for p in remote_tree(remote))
