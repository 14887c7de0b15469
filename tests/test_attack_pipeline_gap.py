"""Between our batch's push and the next batch (whose locks were all held before that push
began, so it starts from it without a fetch) someone else pushes: a teammate touching a path of
the next batch, or a rewrite of the branch (a force-push). Real bare remote whose post-receive
hook pushes from another clone once; our own clone; nothing is lost, doubled or forced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from auto_healer.checkout import Checkout
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind
from auto_healer.playbooks import load_playbooks

from tests.agent_support import seed_dirs
from tests.conftest import PLAYBOOKS, git, injury_trailers, remote_files
from tests.test_batch_pipeline import _heals
from tests.test_checkout import hook

Repo = tuple[Path, Path]
# Once, right after our first push landed: another clone pushes (a teammate, or a rewrite).
TEAMMATE = """#!/bin/sh
cat >/dev/null
[ -e {m}/DONE ] && exit 0
touch {m}/DONE
unset GIT_DIR GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
git clone -q {remote} {m}/tm && cd {m}/tm || exit 1
{change}
git -c user.name=t -c user.email=t@t commit -qam "someone else" || exit 1
git push -q {force} origin HEAD:main || exit 1
git rev-parse HEAD > {m}/THEIRS
"""
TOUCH_C = "echo theirs > core/src/c/stray.py"
REWRITE = "git reset -q --hard HEAD^ && echo theirs > README.md && git add README.md"


def _is_ancestor(remote: Path, older: str, newer: str = "main") -> bool:
    try:
        git(remote, "merge-base", "--is-ancestor", older, newer)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("rewrite", [False, True], ids=["teammate", "force-pushed"])
async def test_a_push_in_the_gap_before_a_no_fetch_batch_is_raced_never_forced(
    repo: Repo, tmp_path: Path, rewrite: bool
) -> None:
    """Batch 2 (c, d) starts from batch 1's push; the remote moved meanwhile (c touched, or the
    branch rewritten): batch 2 is rebased or replanned and pushed on top of it, once each."""
    remote, work = repo
    seed_dirs(work, ["a", "b", "c", "d"])
    (work / "README.md").exists() or (work / "README.md").write_text("x\n")
    mark = tmp_path / "mark"
    mark.mkdir()
    change = REWRITE if rewrite else TOUCH_C
    force = "-f" if rewrite else ""
    hook(remote, "post-receive", TEAMMATE.format(m=mark, remote=remote, change=change, force=force))
    own = Checkout.clone(str(remote), tmp_path / "own")
    healer = Healer(load_playbooks(PLAYBOOKS), own, dry_run=False, max_batch=2)
    paths = [f"core/src/{n}" for n in "abcd"]
    outcomes = await asyncio.wait_for(asyncio.gather(*_heals(healer, paths)), 60)
    theirs = (mark / "THEIRS").read_text().strip()
    first, second, third, fourth = outcomes
    assert third.kind is Kind.HEALED and fourth.kind is Kind.HEALED, third.reason
    assert third.commit and third.commit == fourth.commit
    assert _is_ancestor(remote, theirs), "their push was overwritten: a force-push"
    assert _is_ancestor(remote, third.commit)
    files = remote_files(remote)
    assert not [f for f in files if f.startswith(("core/src/c/", "core/src/d/"))], files
    trailers = injury_trailers(remote)
    for o in (third, fourth):
        assert o.injury is not None and trailers.count(o.injury.id) == 1
    if rewrite:  # batch 1's commit is gone from the remote: its heals cannot be said to hold
        assert [first.kind, second.kind] == [Kind.FAILED] * 2, first.reason
        assert first.verified is False
    else:
        assert [first.kind, second.kind] == [Kind.HEALED] * 2, first.reason
        assert first.commit and _is_ancestor(remote, first.commit)
        for o in (first, second):
            assert o.injury is not None and trailers.count(o.injury.id) == 1
