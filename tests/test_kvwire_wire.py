"""What `kvwire` puts on the wire and how it takes answers, seen by a second subscriber on a
real nats-server: the headers that keep a create exclusive, a window's TTL, the server's own
reason for a refusal, and replies that come too late."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from auto_healer.embedded import NatsServer
from auto_healer.kvwire import EXPECTED_LAST, KvWire, Replies
from nats.js.api import KeyValueConfig

from tests.agent_support import wait_until


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def _bucket(nc: Any, name: str, **config: Any) -> KvWire:
    js = nc.jetstream()
    await js.create_key_value(KeyValueConfig(bucket=name, history=1, **config))
    replies = await Replies(nc, timeout_s=2.0).start()
    return KvWire(replies, await js.key_value(name), name=name, api_prefix="$JS.API")


async def _sent(nc: Any, name: str) -> list[Any]:
    """Every message written to bucket `name` from now on, as the server received it."""
    seen: list[Any] = []

    async def note(msg: Any) -> None:
        seen.append(msg)

    await nc.subscribe(f"$KV.{name}.>", cb=note)
    await nc.flush()
    return seen


async def test_a_create_over_a_delete_marker_expects_the_marker_revision(nc: Any) -> None:
    """The second write of a create over a deleted key is conditional on the marker: a create
    another replica made in between is never overwritten."""
    kv = await _bucket(nc, "wire1")
    sent = await _sent(nc, "wire1")
    await kv.create("k", b"first")
    await kv.delete("k")
    marker = len(sent)
    revision = await kv.create("k", b"again")
    await nc.flush()
    await wait_until(lambda: len(sent) >= marker + 2, 5, "both writes of the create")
    first_try, second_try = sent[marker], sent[marker + 1]
    assert first_try.headers[EXPECTED_LAST] == "0"
    assert second_try.headers[EXPECTED_LAST] == str(revision - 1)  # the marker's revision
    entry = await kv.get("k")
    assert (entry.bucket, entry.key, entry.value, entry.revision) == (
        "wire1",
        "k",
        b"again",
        revision,
    )


async def test_a_delete_writes_an_empty_marker(nc: Any) -> None:
    """A delete is an empty `KV-Operation: DEL` message, conditional only when `last` is set."""
    kv = await _bucket(nc, "wire2")
    sent = await _sent(nc, "wire2")
    revision = await kv.create("k", b"v")
    await kv.delete("k", last=revision)
    await nc.flush()
    await wait_until(lambda: len(sent) >= 2, 5, "the create and the delete")
    assert sent[1].data == b""
    assert sent[1].headers["KV-Operation"] == "DEL"
    assert sent[1].headers[EXPECTED_LAST] == str(revision)


@pytest.mark.parametrize(("window_s", "header"), [(0.4, "1"), (1.5, "1"), (60, "60")])
async def test_a_window_ttl_is_whole_seconds_never_zero(
    nc: Any, window_s: float, header: str
) -> None:
    """`Nats-TTL`: the window in whole seconds as nats-py cuts it, at least 1 (0 is refused)."""
    name = f"wire3{header}{int(window_s * 10)}"
    kv = await _bucket(nc, name)
    sent = await _sent(nc, name)
    await kv.create("w", b"bee-1", msg_ttl=window_s)
    await nc.flush()
    await wait_until(lambda: len(sent) >= 1, 5, "the window's create")
    assert sent[0].headers["Nats-TTL"] == header


async def test_a_refused_write_carries_the_servers_reason(nc: Any) -> None:
    """A value over the bucket's limit is refused as nats-py refuses it: the same error, with
    the server's code and words (what an on-call engineer reads in the outage message)."""
    kv = await _bucket(nc, "wire4", max_value_size=16)
    plain = await nc.jetstream().key_value("wire4")
    with pytest.raises(nats.js.errors.APIError) as ours:
        await kv.put("k", b"x" * 64)
    with pytest.raises(nats.js.errors.APIError) as theirs:
        await plain.put("k", b"x" * 64)
    assert type(ours.value) is type(theirs.value)
    assert (ours.value.err_code, ours.value.description) == (
        theirs.value.err_code,
        theirs.value.description,
    )
    assert ours.value.description


async def test_a_reply_after_the_timeout_is_ignored_quietly(nats_server: NatsServer) -> None:
    """A responder that answers after the caller gave up: no error reaches the connection, and
    the next request is answered."""
    errors: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    client = await nats.connect(nats_server.url, error_cb=error_cb)
    try:
        replies = await Replies(client, timeout_s=0.2).start()

        async def slow(msg: Any) -> None:
            await asyncio.sleep(0.4 if msg.data == b"slow" else 0)
            await msg.respond(b"late" if msg.data == b"slow" else b"ok")

        await client.subscribe("svc", cb=slow)
        with pytest.raises(nats.errors.TimeoutError):
            await replies.request("svc", b"slow", None)
        await asyncio.sleep(0.4)  # the late answer arrives now
        assert (await replies.request("svc", b"fast", None)).data == b"ok"
        await client.flush()
        assert errors == []
        assert replies._waiting == {}
    finally:
        await client.close()
