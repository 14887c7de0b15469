"""Attacks on the apply step's confinement by file descriptor only (`confine_text` + the
O_NOFOLLOW walk): a directory flipped to a symlink while heals run, hard links. Real files."""

from __future__ import annotations

import os
import threading
import time
from contextlib import suppress
from pathlib import Path

from auto_healer.checkout import Checkout
from auto_healer.demo import SEED, make_repo
from auto_healer.errors import HealFailed, InjuryRejected
from auto_healer.paths import DEFAULT_PROTECTED

from tests.conftest import tree_digest


def test_a_directory_flipped_to_a_symlink_while_heals_run_never_leads_outside(
    tmp_path: Path,
) -> None:
    """A thread swaps `core/src` for a link to an outside tree in a loop while the apply step
    deletes `core/src/random_stuff` again and again: the outside tree and .git stay whole."""
    _, work = make_repo(tmp_path, SEED)
    outside = tmp_path / "outside"
    (outside / "random_stuff").mkdir(parents=True)
    (outside / "random_stuff" / "keep.txt").write_text("keep\n")
    before, git_before = tree_digest(outside), tree_digest(work / ".git")
    co, real, held = Checkout.open(work), work / "core/src", work / "core/src-held"
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            os.rename(real, held)
            os.symlink(outside, real)
            os.unlink(real)
            os.rename(held, real)

    flipper = threading.Thread(target=flip)
    flipper.start()
    deleted = refused = 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for d in (real, held):  # put the victim back wherever the real directory is now
                with suppress(OSError):  # the flipper moved it meanwhile
                    if not d.is_symlink():
                        (d / "random_stuff").mkdir(exist_ok=True)
            try:
                co.apply_files(["core/src/random_stuff"], {}, DEFAULT_PROTECTED)
                deleted += 1
            except (InjuryRejected, HealFailed):
                refused += 1
    finally:
        stop.set()
        flipper.join()
    assert refused and deleted, (deleted, refused)  # the race was really run both ways
    assert tree_digest(outside) == before
    assert tree_digest(work / ".git") == git_before


def test_a_file_hard_linked_to_git_config_is_rewritten_without_touching_git_config(
    tmp_path: Path,
) -> None:
    """`cfg` is a hard link of `.git/config`: the write replaces the name, never the inode."""
    _, work = make_repo(tmp_path, SEED)
    os.link(work / ".git/config", work / "cfg")
    config = (work / ".git/config").read_bytes()
    Checkout.open(work).apply_files([], {"cfg": b"rewritten\n"}, DEFAULT_PROTECTED)
    assert (work / "cfg").read_bytes() == b"rewritten\n"
    assert (work / ".git/config").read_bytes() == config
