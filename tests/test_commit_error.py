"""A refused commit is reported by name, not by its first option."""

from __future__ import annotations

from pathlib import Path

import pytest
from auto_healer.checkout import Checkout
from auto_healer.errors import HealFailed, TransientError


def test_a_commit_git_refuses_names_the_commit(repo: tuple[Path, Path]) -> None:
    """Nothing staged: git refuses the commit, and the error says `git commit failed`."""
    _remote, work = repo
    with pytest.raises((HealFailed, TransientError)) as caught:
        Checkout.open(work).commit("auto-heal: nothing", "sha256-x")
    assert str(caught.value).startswith("git commit failed:"), str(caught.value)
