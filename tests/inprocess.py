"""An in-process agent for testing its logic: a fake source feeding real deliveries to the real
pipeline (gate, healer on a real git repo, decision, effects, pager), with a recording settler
and publisher in place of NATS. Faults on real processes stay in the real-server tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_healer.admission import Gate, Verifier
from auto_healer.agent import Agent
from auto_healer.checkout import Checkout, Identity
from auto_healer.effects import Effects
from auto_healer.healer import Healer
from auto_healer.liveness import Liveness
from auto_healer.metrics import Metrics
from auto_healer.pager import Pager
from auto_healer.playbooks import load_playbooks
from auto_healer.sources import Delivery, Slots, Submit
from auto_healer.sources.nats_core import CoreSource

from tests.conftest import PLAYBOOKS


@dataclass
class RecordingSettler:
    """Records every settle call, in order."""

    calls: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nak(self, delay_s: float) -> None:
        self.calls.append(f"nak:{delay_s:g}")

    async def term(self) -> None:
        self.calls.append("term")

    async def in_progress(self) -> None:
        return None

    @property
    def settles(self) -> list[str]:
        return self.calls


@dataclass
class Sent:
    """One message the agent published."""

    subject: str
    payload: Any
    headers: dict[str, str] | None


class RecordingPublisher:
    """Stands in for `bloodstream.Publisher`: keeps what would have been published."""

    def __init__(self, *, fail: bool = False) -> None:
        self.sent: list[Sent] = []
        self.fail = fail

    async def publish(
        self,
        subject: str,
        payload: dict[str, Any] | bytes,
        headers: dict[str, str] | None = None,
        *,
        js: Any = None,
    ) -> bool:
        if self.fail:
            return False
        self.sent.append(Sent(subject, payload, headers))
        return True

    async def publish_event(self, subject: str, doc: dict[str, Any]) -> bool:
        return await self.publish(subject, doc)

    async def publish_dead_letter(
        self, subject: str, body: bytes, headers: dict[str, str], *, js: Any = None
    ) -> bool:
        return await self.publish(subject, body, headers, js=js)

    def events(self) -> list[dict[str, Any]]:
        return [s.payload for s in self.sent if s.subject.startswith("aura.hive.events.")]

    def dead_letters(self) -> list[Sent]:
        return [s for s in self.sent if s.subject.startswith("aura.hive.dead_letter.")]


class ListSource:
    """Feeds a fixed list of deliveries, each into a reserved slot, then stays idle."""

    name = "fake"

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.deliveries = deliveries
        self._task: asyncio.Task[None] | None = None

    async def start(self, slots: Slots, submit: Submit, stopping: asyncio.Event) -> None:
        async def feed() -> None:
            for d in self.deliveries:
                await slots.reserve()
                submit(d)

        self._task = asyncio.create_task(feed())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def describe(self) -> dict[str, object]:
        return {"deliveries": len(self.deliveries)}


class UpLink:
    """A connection that is always up."""

    is_connected = True

    async def drain(self) -> None:
        return None


def delivery(
    data: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    attempt: int = 1,
    max_attempts: int | None = None,
) -> tuple[Delivery, RecordingSettler]:
    """A delivery with a recording settler (JetStream-like when `max_attempts` is given)."""
    settler = RecordingSettler()
    d = Delivery(
        data=data,
        subject="aura.hive.injury",
        received_at=0.0,
        headers=dict(headers or {}),
        attempt=attempt,
        max_attempts=max_attempts,
        settler=settler,
    )
    return d, settler


async def run_agent(
    work: Path,
    deliveries: list[Delivery],
    *,
    publisher: RecordingPublisher | None = None,
    pager: Pager | None = None,
    verifier: Verifier | None = None,
    dry_run: bool = False,
    playbooks: Path = PLAYBOOKS,
    timeout_s: float = 60.0,
    metrics: Metrics | None = None,
) -> RecordingPublisher:
    """Run the real pipeline over `deliveries` until each one was settled; fail loudly if not."""
    publisher = publisher or RecordingPublisher()
    checkout = Checkout.open(work, identity=Identity("auto-healer", "auto-healer@aura.hive"))
    healer = Healer(load_playbooks(playbooks), checkout, dry_run=dry_run)
    metrics = metrics or Metrics()
    agent = Agent(
        source=ListSource(deliveries),
        healer=healer,
        effects=Effects(publisher, pager, metrics, js=None, repo=healer.repo_key),  # type: ignore[arg-type]
        gate=Gate(verifier),
        link=UpLink(),
        liveness=Liveness(max_disconnected_s=60),
        metrics=metrics,
        max_in_flight=4,
        grace_period_s=5,
    )
    runner = asyncio.create_task(agent.run(install_signals=False))
    try:
        async with asyncio.timeout(timeout_s):
            while any(not d.settler.calls for d in deliveries):  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)
    except TimeoutError:
        unsettled = [d.data[:80] for d in deliveries if not d.settler.calls]  # type: ignore[attr-defined]
        raise AssertionError(f"not settled within {timeout_s}s: {unsettled}") from None
    finally:
        agent.stopping.set()
        await runner
        checkout.close()
    return publisher


def core_agent(
    nc: Any,
    work: Path,
    *,
    playbooks: Path = PLAYBOOKS,
    grace_period_s: float = 30.0,
    **agent_options: Any,
) -> tuple[Agent, Checkout, RecordingPublisher, Metrics]:
    """A real agent on core NATS (`aura.hive.injury`, no queue group) healing the checkout
    `work` with one slot unless told otherwise: (the agent, its checkout to close, the events
    it published, its metrics)."""
    checkout = Checkout.open(work, identity=Identity("auto-healer", "auto-healer@aura.hive"))
    healer = Healer(load_playbooks(playbooks), checkout, dry_run=False)
    publisher, metrics = RecordingPublisher(), Metrics()
    agent = Agent(
        source=CoreSource(nc, "aura.hive.injury", queue=""),
        healer=healer,
        effects=Effects(publisher, None, metrics, js=None, repo=healer.repo_key),  # type: ignore[arg-type]
        gate=Gate(),
        link=UpLink(),
        liveness=Liveness(max_disconnected_s=60),
        metrics=metrics,
        **{"max_in_flight": 1, **agent_options},
        grace_period_s=grace_period_s,
    )
    return agent, checkout, publisher, metrics
