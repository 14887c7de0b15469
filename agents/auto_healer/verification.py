"""Verify after a heal: does the remote head show what was pushed?

A push that succeeded says only that the remote took a commit. A hook on the remote, another
pusher or a bot may undo it at once. So after each push the remote branch's tip is fetched
(into a private ref: the checkout is not touched) and every step of the healed injury's
playbook checks it through its action's `verify` (the `Action` protocol: a new action brings
its own check). A heal whose result the remote head does not show becomes a `failed` outcome
with `verified` False, and `decision.decide` pages it; a heal it shows stays `healed` with
`verified` True. Verification never raises: whatever goes wrong is a heal not verified.

The injuries of one batch share a commit: the first of them fetches the head, the others reuse
it, so a batch costs one fetch; their paths are looked up together (`RemoteTree.has`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import structlog

from auto_healer.actions import VerifyContext, get_action
from auto_healer.checkout import Checkout
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import Playbook
from auto_healer.remote_tree import RemoteTree, fetch_head, head_of

log = structlog.get_logger("auto_healer.verification")


class HealVerifier:
    """Checks the healed outcomes of one checkout against its remote."""

    def __init__(self, checkout: Checkout) -> None:
        self.checkout = checkout
        self._lock = asyncio.Lock()  # one fetch at a time into the private ref
        self._after: dict[str, tuple[str, str]] = {}  # branch -> (commit pushed, head then)
        self._reading: dict[tuple[str, str], asyncio.Future[str]] = {}  # heads being read
        self._tree: RemoteTree | None = None  # shared by the injuries of a batch

    async def check(self, playbook: Playbook, outcome: Outcome) -> Outcome:
        """A healed outcome with `verified` True, or `failed` with `verified` False; any
        other outcome as it is (nothing was pushed)."""
        if outcome.kind is not Kind.HEALED or not outcome.commit or not outcome.branch:
            return outcome
        started = time.monotonic()
        try:
            head = await self._head(outcome.branch, outcome.commit)
        except Exception as exc:
            return _unverified(outcome, f"cannot read {outcome.branch} on the remote: {exc}")
        if self._tree is None or self._tree.commit != head:
            self._tree = RemoteTree(self.checkout.root, head)
        why = await _check(self._tree, playbook, outcome)
        log.debug(
            "heal_verified", ok=why is None, head=head[:12], took_s=time.monotonic() - started
        )
        if why is not None:
            return _unverified(outcome, f"the remote head {head[:12]} does not show it: {why}")
        return replace(outcome, verified=True)

    async def _head(self, branch: str, commit: str) -> str:
        """The remote head just after `commit` was pushed (fetched once per commit). The
        injuries of a batch wait for one read together, so they go on together and ask their
        paths of one `ls-tree` (`RemoteTree.has`), not each in its turn through the lock."""
        seen = self._after.get(branch)
        if seen is not None and seen[0] == commit:
            return seen[1]
        key = (branch, commit)
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(self._read(branch, commit))
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
            return await asyncio.shield(reading)
        try:
            return await asyncio.shield(reading)
        except Exception:  # another's read failed: read again, as each did before
            return await self._read(branch, commit)

    async def _read(self, branch: str, commit: str) -> str:
        async with self._lock:
            seen = self._after.get(branch)
            if seen is not None and seen[0] == commit:
                return seen[1]
            co, timeout_s = self.checkout, self.checkout.network_timeout_s
            # The remote's own answer; when it is our push, its objects are here already.
            head = await head_of(co.root, co.remote, branch, timeout_s=timeout_s)
            if head != commit:  # moved on since (or gone): fetch what it holds now
                head = await fetch_head(co.root, co.remote, branch, timeout_s=timeout_s)
            self._after[branch] = (commit, head)
            return head


async def _check(tree: RemoteTree, playbook: Playbook, outcome: Outcome) -> str | None:
    """Every step's check of one injury; the first that fails says why."""
    assert outcome.injury is not None  # a healed outcome always has its injury
    ctx = VerifyContext(injury=outcome.injury, tree=tree, protected=playbook.protected_globs)
    for step in playbook.steps:
        try:
            why = await get_action(step.action).verify(ctx, step.options)
        except Exception as exc:  # a check that cannot run proves nothing: not verified
            why = f"{step.action} could not check: {type(exc).__name__}: {exc}"
        if why is not None:
            return why
    return None


def _unverified(outcome: Outcome, why: str) -> Outcome:
    log.warning("heal_not_verified", commit=outcome.commit, reason=why)
    reason = f"{outcome.reason}, but not verified: {why}"
    return replace(outcome, kind=Kind.FAILED, reason=reason, verified=False, retryable=False)
