"""The push of batch 1 refused for good (a pre-receive hook that declines any push removing
core/src/a) while batch 2 holds its locks: batch 1 fails with the checkout clean, batch 2
heals on the remote head, nothing of batch 1 lands. Real KV locks and a real bare remote."""

from __future__ import annotations

import asyncio
from pathlib import Path

from auto_healer.healer import Healer
from auto_healer.outcomes import Kind

from tests.agent_support import seed_dirs
from tests.conftest import git, injury_trailers, remote_files
from tests.test_batch_pipeline import _heals, kv_healer  # noqa: F401 (a fixture)
from tests.test_checkout import hook

Repo = tuple[Path, Path]
REFUSE_A = """#!/bin/sh
while read old new ref; do
  if git diff --name-only "$old" "$new" | grep -q '^core/src/a/'; then
    echo "policy: core/src/a may not be removed" >&2
    exit 1
  fi
done
"""


async def test_a_batch_refused_for_good_leaves_the_next_batch_to_heal_alone(
    repo: Repo,
    kv_healer: Healer,  # noqa: F811
) -> None:
    """Batch 1 (a, b) is refused on every push; batch 2 (c, d) is healed once, on its own."""
    remote, work = repo
    seed_dirs(work, ["a", "b", "c", "d"])
    hook(remote, "pre-receive", REFUSE_A)
    before = git(remote, "rev-parse", "main").strip()
    paths = [f"core/src/{n}" for n in "abcd"]
    a, b, c, d = await asyncio.wait_for(asyncio.gather(*_heals(kv_healer, paths)), 60)
    assert [a.kind, b.kind] == [Kind.FAILED] * 2, a.reason
    assert [c.kind, d.kind] == [Kind.HEALED] * 2, c.reason
    assert c.commit and git(remote, "rev-parse", f"{c.commit}^").strip() == before
    files = remote_files(remote)
    assert "core/src/a/stray.py" in files and "core/src/b/stray.py" in files
    assert not [f for f in files if f.startswith(("core/src/c/", "core/src/d/"))]
    trailers = injury_trailers(remote)
    assert a.injury and b.injury and a.injury.id not in trailers and b.injury.id not in trailers
    assert c.injury and trailers.count(c.injury.id) == 1
    assert git(work, "status", "--porcelain") == ""  # the checkout is clean
