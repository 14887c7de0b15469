"""Breaker places reserved many at once give the verdicts single reservations give."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import nats
import pytest
from auto_healer import breaker, controls
from auto_healer.embedded import NatsServer
from auto_healer.kvcell import KvCell
from auto_healer.reservations import Reservations
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(120)

# Before: a prefix of single reservations (how far in, how late); then n at once.
Case = tuple[breaker.Limits, list[tuple[int, float]], int, float]
cases = st.tuples(
    st.builds(
        breaker.Limits,
        max_heals=st.integers(0, 6),
        window_s=st.sampled_from([0.0, 5.0, 60.0]),
        manual_reset=st.booleans(),
    ),
    st.lists(st.tuples(st.integers(0, 8), st.sampled_from([0.0, 3.0, 70.0])), max_size=3),
    st.integers(0, 12),
    st.sampled_from([0.0, 1.0, 6.0, 100.0]),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real nats-server with JetStream for every example."""
    with NatsServer(tmp_path_factory.mktemp("nats")) as srv:
        yield srv


def _fields(state: breaker.State | None) -> object:
    """A breaker's state without its repository's name."""
    return None if state is None else (state.count, state.open, state.opened_at, state.held)


async def _both(url: str, case: Case) -> tuple[list[str], list[str], object, object]:
    limits, before, n, later = case
    nc = await nats.connect(url)
    try:
        cells = await KvCell.open(nc.jetstream(), controls.BUCKET_CONTROLS)
        one, many = f"one-{uuid.uuid4().hex}", f"many-{uuid.uuid4().hex}"
        at = 1000.0
        for count, step in before:  # the same history on both repositories
            at += step
            for repo in (one, many):
                for _ in range(count):
                    await breaker.reserve(cells, repo, limits, now=at)
        at += later
        singles = [await breaker.reserve(cells, one, limits, now=at) for _ in range(n)]
        batch = await breaker.reserve_many(cells, many, limits, n, now=at)
        s1, s2 = await breaker.status(cells, one), await breaker.status(cells, many)
        return [v.value for v in singles], [v.value for v in batch], _fields(s1), _fields(s2)
    finally:
        await nc.close()


@settings(max_examples=40, deadline=None)
@given(case=cases)
def test_many_at_once_equals_one_after_another(server: NatsServer, case: Case) -> None:
    """`reserve_many(n)` gives the verdicts, and leaves the state, of n `reserve` in a row."""
    singles, batch, state_one, state_many = asyncio.run(_both(server.url, case))
    assert batch == singles
    assert state_many == state_one


async def test_a_burst_through_reservations_takes_few_writes(nats_server: NatsServer) -> None:
    """200 heals asking at once through one replica: exactly 5 go, one trips, the rest are held,
    in a handful of compare-and-sets instead of 200 in a row."""
    nc = await nats.connect(nats_server.url)
    try:
        cells = await KvCell.open(nc.jetstream(), controls.BUCKET_CONTROLS)
        limits = breaker.Limits(max_heals=5, window_s=600)
        reservations = Reservations(asyncio.Lock())
        verdicts = await asyncio.gather(
            *(reservations.reserve(cells, "r", limits) for _ in range(200))
        )
        assert Counter(verdicts) == {"go": 5, "tripped": 1, "open": 194}
        found = await cells.read(breaker.breaker_key("r"))
        assert found is not None and found[1] <= 3, f"{found[1]} writes"  # KV revision
    finally:
        await nc.close()
