"""Coalesced heals: injuries queued behind a heal share one sync, one commit and one push."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import nats
import pytest
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks

from tests.agent_support import AgentProcess, Events, consumer_info, seed_dirs, wait_until
from tests.conftest import (
    PLAYBOOKS,
    commit_count,
    git,
    heal_cli,
    injury,
    injury_trailers,
    remote_files,
    write_injuries,
)
from tests.test_checkout import other_clone_pushes

Repo = tuple[Path, Path]
SUBJECT = "aura.hive.injury"


def _paths(n: int, prefix: str = "b") -> list[str]:
    return [f"core/src/{prefix}{i}" for i in range(n)]


def _healer(work: Path, *, max_batch: int = 200, playbooks: Path = PLAYBOOKS) -> Healer:
    books, checkout = load_playbooks(playbooks), Checkout.open(work)
    if max_batch == 200:  # the default
        return Healer(books, checkout, dry_run=False)
    return Healer(books, checkout, dry_run=False, max_batch=max_batch)


async def _heal_together(healer: Healer, paths: list[str]) -> list[Outcome]:
    """Hand every injury to the healer at once, as the agent's in-flight deliveries do."""
    parsed = [parse_injury(json.dumps(injury(p + "/")).encode()) for p in paths]
    return list(await asyncio.gather(*(healer.handle(p) for p in parsed)))


def _books(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped playbooks with one edit to unauthorized_directory.yaml."""
    books = tmp_path / "books"
    shutil.copytree(PLAYBOOKS, books)
    shipped = books / "unauthorized_directory.yaml"
    text = shipped.read_text()
    assert old in text
    shipped.write_text(text.replace(old, new))
    return books


def _trailers_of(remote: Path, sha: str) -> list[str]:
    out = git(remote, "log", "-1", "--format=%(trailers:key=Injury-Id,valueonly)", sha)
    return out.split()


async def test_fifty_injuries_land_in_few_commits_each_with_its_outcome(repo: Repo) -> None:
    """50 distinct injuries with MAX_BATCH 20: ≤ 3 commits, 50 trailers, 50 healed outcomes."""
    remote, work = repo
    paths = _paths(50)
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in paths])
    before = commit_count(remote)
    outcomes = await _heal_together(_healer(work, max_batch=20), paths)
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 50, [o.reason for o in outcomes]
    assert commit_count(remote) - before <= 3  # ceil(50 / 20)
    assert sorted(injury_trailers(remote)) == sorted(o.injury_id for o in outcomes)
    for o in outcomes:
        assert o.commit is not None
        assert o.injury_id in _trailers_of(remote, o.commit)
    assert not [f for f in remote_files(remote) if any(f.startswith(p + "/") for p in paths)]
    assert git(work, "status", "--porcelain") == ""


async def test_a_refused_injury_is_left_out_and_the_rest_commit(repo: Repo) -> None:
    """A file named as a directory is rejected alone; the other injuries share one commit."""
    remote, work = repo
    paths = _paths(4)
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in paths])
    before = commit_count(remote)
    outcomes = await _heal_together(_healer(work), [*paths[:2], "core/src/b3/stray.py", *paths[2:]])
    kinds = [o.kind for o in outcomes]
    assert kinds == [Kind.HEALED, Kind.HEALED, Kind.REJECTED, Kind.HEALED, Kind.HEALED]
    assert "not a directory" in outcomes[2].reason
    assert outcomes[2].commit is None
    assert commit_count(remote) == before + 1
    healed = [o for o in outcomes if o.kind is Kind.HEALED]
    assert len({o.commit for o in healed}) == 1
    assert sorted(injury_trailers(remote)) == sorted(o.injury_id for o in healed)


async def test_a_push_race_mid_batch_rebases_the_batch(repo: Repo, tmp_path: Path) -> None:
    """Another clone pushes between the batch's sync and its push: the batch's commit is rebased
    onto the new head and pushed once more, keeping the other commit."""
    remote, work = repo
    paths = _paths(10)
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in paths])
    healer = _healer(work)
    real_push = healer.checkout.push
    raced: list[str] = []

    def push_after_someone_else(target: str) -> bool:
        if not raced:
            raced.append(other_clone_pushes(tmp_path, remote))
        return real_push(target)

    healer.checkout.push = push_after_someone_else  # type: ignore[method-assign]
    outcomes = await _heal_together(healer, paths)
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 10, [o.reason for o in outcomes]
    assert {o.attempts for o in outcomes} == {2}
    [sha] = {o.commit for o in outcomes}
    assert sha is not None
    assert git(remote, "rev-parse", "main").strip() == sha
    assert git(remote, "rev-parse", "main~1").strip() == raced[0]
    assert "NEW.md" in remote_files(remote)
    assert sorted(_trailers_of(remote, sha)) == sorted(o.injury_id for o in outcomes)


async def test_batch_false_heals_one_injury_per_commit(repo: Repo, tmp_path: Path) -> None:
    """A playbook with `batch: false` keeps one commit (one trailer) per injury."""
    remote, work = repo
    paths = _paths(5)
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in paths])
    books = _books(tmp_path, "on_failure: escalate\n", "on_failure: escalate\nbatch: false\n")
    before = commit_count(remote)
    outcomes = await _heal_together(_healer(work, playbooks=books), paths)
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 5
    assert commit_count(remote) == before + 5
    assert len({o.commit for o in outcomes}) == 5
    for o in outcomes:
        assert o.commit is not None
        assert _trailers_of(remote, o.commit) == [o.injury_id]


def test_the_one_shot_heals_a_file_in_one_commit(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`auto-healer heal` of 30 injuries: one commit, outcomes in the file's order."""
    remote, work = repo
    paths = _paths(30)
    seed_dirs(work, [p.rsplit("/", 1)[1] for p in paths])
    before = commit_count(remote)
    file = write_injuries(tmp_path / "i.json", *(injury(p) for p in paths))
    code, report, err = heal_cli(capsys, str(file), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    assert [o["injury"]["affected_path"] for o in report["outcomes"]] == paths
    assert {o["outcome"] for o in report["outcomes"]} == {"healed"}
    assert commit_count(remote) == before + 1
    assert sorted(injury_trailers(remote)) == sorted(o["injury_id"] for o in report["outcomes"])


@pytest.mark.timeout(180)
async def test_two_agents_heal_a_hundred_injuries_each_exactly_once(
    tmp_path: Path, repo: Repo, nats_server: NatsServer
) -> None:
    """Two replicas (JetStream) on one remote: 100 injuries, each trailer once, few commits."""
    remote, work = repo
    names = [f"duo{i}" for i in range(100)]
    seed_dirs(work, names)
    before = commit_count(remote)
    env = {"MAX_IN_FLIGHT": "64"}
    agents = [
        AgentProcess(tmp_path, f"a{i}", nats_server.url, remote, jetstream=True, env=env)
        for i in range(2)
    ]
    events = await Events().start(nats_server.url, "aura.hive.events.injury_healed")
    try:
        for a in agents:
            a.wait_ready()
        await _publish_js(nats_server.url, [injury(f"core/src/{n}/") for n in names])

        async def drained() -> bool:
            c = await consumer_info(nats_server.url)
            return (c.num_pending, c.num_ack_pending) == (0, 0) and len(events.items) >= 100

        await wait_until(drained, 150, "every injury healed and acked", seen=events.seen)
        await asyncio.sleep(0.5)  # a duplicate heal would be announced within this window
        ids = [e["metadata"]["injury_id"] for e in events.items]
        assert len(ids) == len(set(ids)) == 100
        trailers = injury_trailers(remote)
        assert sorted(trailers) == sorted(ids)
        assert commit_count(remote) - before < 50  # coalesced, not one commit per injury
        git(work, "pull", "-q")
        assert not [n for n in names if (work / "core" / "src" / n).exists()]
        for a in agents:
            assert a.terminate() == 0, a.logs()
            assert git(a.checkout(), "status", "--porcelain") == ""
    finally:
        await events.close()
        for a in agents:
            a.kill()


async def _publish_js(url: str, payloads: list[dict[str, object]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await asyncio.gather(
        *(js.publish("aura.hive.injury", json.dumps(p).encode()) for p in payloads)
    )
    await nc.drain()
