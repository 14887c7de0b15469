"""The coordination buckets' lean calls (`kvwire`) answer as nats-py's KeyValue does, on a real
nats-server: the same revisions, values and errors for any sequence of calls; and a store that
is gone or silent is an error, never "not found"."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from auto_healer.assets import BUCKET_HEALED, BUCKET_LOCKS, BUCKET_THROTTLE, open_buckets
from auto_healer.coordination import KvCoordinator
from auto_healer.embedded import NatsServer
from auto_healer.errors import CoordinationUnavailable
from auto_healer.kvwire import KvWire, Replies
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nats.js.kv import KeyValue

KEYS = ["a", "b", "c"]
BUCKETS = itertools.count(100)  # a new pair of buckets for each example
CALLS = st.lists(
    st.tuples(
        st.sampled_from(["create", "get", "put", "update", "delete", "purge"]),
        st.sampled_from(KEYS),
        st.binary(max_size=8),
        st.integers(min_value=0, max_value=12),
    ),
    max_size=25,
)


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def _pair(nc: Any, n: int) -> tuple[KeyValue, KvWire]:
    """Two empty buckets on one server: one spoken to by nats-py, one by `KvWire`."""
    js = nc.jetstream()
    plain = await js.create_key_value(bucket=f"plain{n}", history=1)
    await js.create_key_value(bucket=f"wire{n}", history=1)
    replies = await Replies(nc, timeout_s=2.0).start()
    lean = KvWire(replies, await js.key_value(f"wire{n}"), name=f"wire{n}", api_prefix="$JS.API")
    return plain, lean


async def _answer(kv: Any, call: str, key: str, value: bytes, last: int) -> object:
    """What one call returns or raises, in a form both clients can be compared by."""
    try:
        if call == "get":
            entry = await kv.get(key)
            return ("entry", entry.key, entry.value or b"", entry.revision)
        if call == "update":
            return ("rev", await kv.update(key, value, last=last))
        if call == "delete":
            return ("ok", await kv.delete(key, last=last))
        if call == "purge":
            return ("ok", await kv.purge(key))
        return ("rev", await getattr(kv, call)(key, value))
    except nats.js.errors.KeyWrongLastSequenceError:
        return ("raised", "wrong last sequence")
    except nats.js.errors.APIError as exc:
        # nats-py's `delete` does not name a wrong last sequence; ours does
        if getattr(exc, "err_code", None) in (10071, 10164):
            return ("raised", "wrong last sequence")
        return ("raised", type(exc).__name__)
    except Exception as exc:
        return ("raised", type(exc).__name__)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=CALLS)
@example(calls=[("put", "a", b"", 0), ("get", "a", b"", 0)])  # an empty value reads back empty
@example(calls=[("update", "a", b"x", 0), ("update", "a", b"y", 1), ("get", "a", b"", 0)])
@example(calls=[("put", "a", b"x", 0), ("delete", "a", b"", 0), ("create", "a", b"y", 0)])
@example(calls=[("put", "a", b"x", 0), ("purge", "a", b"", 0), ("create", "a", b"y", 0)])
async def test_any_sequence_of_calls_answers_as_nats_py_does(nc: Any, calls: list[Any]) -> None:
    """Creates over delete markers, stale updates, reads of deleted keys: same answers."""
    plain, lean = await _pair(nc, next(BUCKETS))
    for call, key, value, last in calls:
        expected = await _answer(plain, call, key, value, last)
        assert await _answer(lean, call, key, value, last) == expected, (call, key, last)


async def test_a_create_with_a_ttl_expires(nc: Any) -> None:
    """`msg_ttl` reaches the server (`Nats-TTL`): the window is gone after it."""
    _plain, lean = await _pair(nc, 1)
    revision = await lean.create("w", b"bee-1", msg_ttl=1)
    assert (await lean.get("w")).revision == revision
    for _ in range(60):
        await asyncio.sleep(0.1)
        try:
            await lean.get("w")
        except nats.js.errors.KeyNotFoundError:
            break
    else:
        pytest.fail("a 1 s window was still there after 6 s")
    assert await lean.create("w", b"bee-2", msg_ttl=60) > revision


async def test_a_bucket_that_vanished_is_an_outage_not_a_missing_key(nc: Any) -> None:
    """nats-py reads a deleted stream as "key not found" (not healed): here it is an error,
    which the coordinator reports as the store being unavailable."""
    js = nc.jetstream()
    coord = await KvCoordinator.create(js, owner="a")
    await coord.mark_healed("bee-1", "c0ffee")
    await js.delete_stream(f"KV_{BUCKET_HEALED}")
    with pytest.raises(CoordinationUnavailable, match=r"read healed ids.*stream not found"):
        await coord.healed_commit("bee-2")
    with pytest.raises(CoordinationUnavailable, match="record a healed id"):
        await coord.mark_healed("bee-2", "c0ffee")


async def test_a_silent_store_times_out_and_leaves_nothing_waiting(nats_server: NatsServer) -> None:
    """A request the server never answers raises nats' timeout once, and is forgotten."""
    client = await nats.connect(nats_server.url)
    try:
        replies = await Replies(client, timeout_s=0.2).start()
        await client.subscribe("silent.>", cb=_ignore)
        with pytest.raises(nats.errors.TimeoutError):
            await replies.request("silent.one", b"{}", None)
        assert replies._waiting == {}
    finally:
        await client.close()


async def _ignore(msg: Any) -> None:
    """A responder that never answers."""


async def test_no_responders_raises(nc: Any) -> None:
    """A subject no stream listens on answers "no responders" at once, not after the timeout."""
    replies = await Replies(nc, timeout_s=5.0).start()
    started = asyncio.get_running_loop().time()
    with pytest.raises(nats.errors.NoRespondersError):
        await replies.request("$KV.nobody.key", b"x", None)
    assert asyncio.get_running_loop().time() - started < 4.0
    assert replies._waiting == {}


async def test_a_cancelled_call_is_forgotten(nc: Any) -> None:
    """A caller cancelled while waiting leaves no future behind (bounded over a long run)."""
    replies = await Replies(nc, timeout_s=5.0).start()
    await nc.subscribe("silent.>", cb=_ignore)
    call = asyncio.create_task(replies.request("silent.two", b"{}", None))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert replies._waiting == {}


async def test_the_coordinator_buckets_are_lean_and_share_one_subscription(nc: Any) -> None:
    """`open_buckets` gives the three coordination buckets one reply subscription."""
    js = nc.jetstream()
    buckets = await open_buckets(js, lock_ttl_s=60)
    assert [type(b) for b in buckets] == [KvWire] * 3
    assert len({id(b._replies) for b in buckets}) == 1
    assert [b._name for b in buckets] == [BUCKET_LOCKS, BUCKET_HEALED, BUCKET_THROTTLE]


async def test_a_lean_bucket_can_be_copied(nc: Any) -> None:
    """`copy.copy` of a bucket does not recurse through the delegation to nats-py."""
    _plain, lean = await _pair(nc, 2)
    assert copy.copy(lean)._name == lean._name
