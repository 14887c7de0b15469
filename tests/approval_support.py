"""In-process replicas for the approval tests: a real guard and healer on a real clone of a bare
remote, sharing a real nats-server's controls bucket; outcomes with no message are recorded."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import nats
from auto_healer import approvals, breaker, controls
from auto_healer.checkout import Checkout, Identity
from auto_healer.contracts import ParsedInjury, parse_injury_obj
from auto_healer.guard import Guard
from auto_healer.healer import Healer
from auto_healer.kvcell import KvCell
from auto_healer.outcomes import Outcome
from auto_healer.playbooks import load_playbooks

from tests.agent_support import wait_until
from tests.conftest import PLAYBOOKS, git, injury


class Replica:
    """One replica's guard (watching the bucket, carrying out approvals) and healer."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        url: str,
        remote: Path,
        *,
        playbooks: Path = PLAYBOOKS,
        signing_key: bytes | None = None,
        reclaim_after_s: float = 900.0,
        limits: breaker.Limits | None = None,
    ) -> None:
        self.tmp, self.name, self.url, self.remote = tmp, name, url, remote
        self.playbooks, self.signing_key, self.reclaim_after_s = (
            playbooks,
            signing_key,
            reclaim_after_s,
        )
        self.limits = limits or breaker.Limits(max_heals=100, window_s=600)
        self.announced: list[Outcome] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Replica:
        work = self.tmp / f"clone-{self.name}"
        git(self.tmp, "clone", "-q", str(self.remote), work.name)
        self.checkout = Checkout.open(work, identity=Identity("auto-healer", "a@h"))
        self.healer = Healer(load_playbooks(self.playbooks), self.checkout, dry_run=False)
        self.nc = await nats.connect(self.url)
        self.cells = await KvCell.open(self.nc.jetstream(), controls.BUCKET_CONTROLS)
        self.guard = Guard(
            controls.Controls(self.cells),
            load_playbooks(self.playbooks),
            repo=self.healer.repo_key,
            limits=self.limits,
            **self._options(),
        )
        self._task = asyncio.create_task(
            self.guard.run(None, heal=self.healer.handle, announce=self._announce, owner=self.name)
        )
        await asyncio.wait_for(self.guard.controls.synced.wait(), 10)
        return self

    def _options(self) -> dict[str, object]:
        """Only what a test sets: the same helper then runs on code without these options."""
        given = {"signing_key": self.signing_key, "reclaim_after_s": self.reclaim_after_s}
        return {k: v for k, v in given.items() if v not in (None, 900.0)}

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.checkout.close()
        await self.nc.close()

    async def _announce(self, outcome: Outcome) -> None:
        self.announced.append(outcome)

    async def handle(self, parsed: ParsedInjury) -> Outcome:
        """What this replica makes of a delivered injury."""
        return await self.guard.handle(parsed, self.healer.handle)

    async def request(self, injury_id: str) -> approvals.Request:
        found = await approvals.read(self.cells, injury_id)
        assert found is not None, f"no approval request for {injury_id}"
        return found[0]

    async def wait_state(self, injury_id: str, state: str, timeout_s: float = 15) -> None:
        async def reached() -> bool:
            return (await self.request(injury_id)).state == state

        await wait_until(reached, timeout_s, f"request {injury_id} {state}")


def parsed(path: str, **extra: object) -> ParsedInjury:
    return parse_injury_obj(injury(path, **extra))


def approval_playbooks(tmp: Path, extra: str = "approval: required\n") -> Path:
    """The shipped playbooks, the directory one with `extra` appended."""
    books = tmp / "books"
    shutil.copytree(PLAYBOOKS, books)
    shipped = books / "unauthorized_directory.yaml"
    shipped.write_text(shipped.read_text() + extra)
    return books
