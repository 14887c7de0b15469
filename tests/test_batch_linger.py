"""The first batch of a burst waits for the burst (`batch_queue._linger`), not for nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks
from auto_healer.settings import Settings

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, commit_count, git, injury, injury_trailers

Repo = tuple[Path, Path]


async def _trickle(healer: Healer, paths: list[str], gap_s: float) -> list[Outcome]:
    """Hand the injuries to the healer `gap_s` apart, as a burst read off the wire arrives."""
    tasks = []
    for p in paths:
        parsed = parse_injury(json.dumps(injury(f"core/src/{p}/")).encode())
        tasks.append(asyncio.ensure_future(healer.handle(parsed)))
        await asyncio.sleep(gap_s)
    return list(await asyncio.gather(*tasks))


async def test_a_burst_arriving_a_millisecond_apart_is_one_commit(repo: Repo) -> None:
    """Twenty injuries 1 ms apart on an idle checkout: one commit for them, not a commit for
    the first alone and another for the rest."""
    remote, work = repo
    paths = [f"lg{i}" for i in range(20)]
    seed_dirs(work, paths)
    before = commit_count(remote)
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, max_batch=50)
    outcomes = await _trickle(healer, paths, 0.001)
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 20, [o.reason for o in outcomes]
    # One commit; a loop stalled past the quiet time by a busy machine may split it in two,
    # but never into the first injury alone and the rest.
    assert commit_count(remote) - before <= 2
    first = outcomes[0].commit
    assert sum(o.commit == first for o in outcomes) > 1
    assert sorted(injury_trailers(remote)) == sorted(o.injury_id for o in outcomes)
    assert git(work, "status", "--porcelain") == ""


async def test_injuries_far_apart_are_each_healed_on_their_own(repo: Repo) -> None:
    """Injuries 150 ms apart (past the linger) are not held for one another: each is healed,
    each in its own commit."""
    remote, work = repo
    paths = ["far0", "far1", "far2"]
    seed_dirs(work, paths)
    before = commit_count(remote)
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, max_batch=50)
    outcomes = []
    for p in paths:  # each waits for the one before: nothing to coalesce with
        outcomes += await _trickle(healer, [p], 0.15)
    assert [o.kind for o in outcomes] == [Kind.HEALED] * 3, [o.reason for o in outcomes]
    assert commit_count(remote) - before == 3


def test_in_flight_by_default_holds_three_full_batches() -> None:
    """The default in-flight bound holds the batch healing, the next holding its locks and the
    one filling up (512 against batches of 200 held a burst's last batches back)."""
    fields = Settings.model_fields
    assert fields["max_in_flight"].default >= 3 * fields["max_batch"].default
