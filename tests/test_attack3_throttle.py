"""Attack on the throttle claimed under the path lock: a window that ran out while its heal
pushed, claimed since by another replica's injury, must not be let go by the heal that fails
after it. Real JetStream KV, real git repositories with a bare remote and a pre-receive hook."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from auto_healer.coordination import KvCoordinator
from auto_healer.outcomes import Kind

from tests.agent_support import seed_dirs
from tests.conftest import injury_trailers
from tests.test_batch_pipeline import HOLD
from tests.test_checkout import hook
from tests.test_throttle_batch import THROTTLED, Make, _injury, _until, _window_holder, make

__all__ = ["make"]  # the fixture, shared with test_throttle_batch
Repo = tuple[Path, Path]
WINDOW_S = 2.0
HOLD_THEN_REFUSE_ONCE = (
    HOLD
    + """if [ ! -e {g}/REFUSED_ONCE ]; then
  touch {g}/REFUSED_ONCE
  echo "policy: refused by a reviewer" >&2
  exit 1
fi
"""
)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_failed_heal_leaves_the_window_another_replica_claimed_since(
    repo: Repo, make: Make, tmp_path: Path
) -> None:
    """Replica a heals X in a batch, its push held past X's window and then refused; replica b
    (MAX_BATCH=1, its claim at intake) claimed the window for Y meanwhile: X's failure leaves
    Y's window alone, and a new Z inside it is throttled, not healed beside Y."""
    remote, work = repo
    seed_dirs(work, ["p"])
    gate = tmp_path / "gate"
    gate.mkdir()
    hook(remote, "pre-receive", HOLD_THEN_REFUSE_ONCE.format(g=gate))
    a = await make("a", window_s=WINDOW_S, clone=True)
    b = await make("b", window_s=WINDOW_S, clone=True, max_batch=1, lock_wait_s=30)
    assert a.repo_key == b.repo_key
    x, y, z = _injury(0), _injury(1), _injury(2)
    first = asyncio.ensure_future(a.handle(x))
    await _until("X's push", (gate / "IN_PUSH").exists)
    await asyncio.sleep(WINDOW_S + 0.2)  # X's window ran out (the store's entry and a's cache)
    coord = a.coordinator
    assert isinstance(coord, KvCoordinator)
    second = asyncio.ensure_future(b.handle(y))  # claims at intake, then waits for the path
    for _ in range(200):
        if await _window_holder(coord, a) == y.id:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("Y never claimed the window")
    (gate / "GO").touch()
    failed = await asyncio.wait_for(first, 20)
    assert failed.kind is Kind.FAILED, failed.reason
    assert await _window_holder(coord, a) == y.id  # Y's window, not X's to let go
    third = await a.handle(z)
    assert third.reason.startswith(THROTTLED), third.reason
    healed = await asyncio.wait_for(second, 30)
    assert healed.kind is Kind.HEALED, healed.reason
    assert injury_trailers(remote) == [y.id]
