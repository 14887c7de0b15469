"""The coordination buckets' calls, sent on one reply subscription per connection.

A burst makes four KV calls an injury (path lock, healed-id read, throttle window, healed-id
write) on the agent's one event loop. nats-py's `KeyValue` spends ~50 µs of CPU on each (a
random token and an `asyncio.wait_for` per request, stdlib JSON, dataclass answers); the same
requests sent here cost ~20 µs, with the same subjects, headers and answers, so the server
cannot tell them apart. Only the calls the coordinator makes per injury live here (`create`,
`get`, `put`, `update`, `delete`); anything else (`keys`, `purge`, `watch`, …) is nats-py's.

What stays as nats-py has it: a `create` over a delete marker rewrites it at its revision,
a timeout raises `nats.errors.TimeoutError`, and "no responders" raises. What is stricter: a
read is "not found" only for the server's "no message found"; any other 404 (no such stream)
is an error, so a vanished bucket reads as an outage, never as "not healed yet"; and the
marker a bucket with a limit marker TTL leaves where a value ran out is "no value" (nats-py
reads it as a value: a dead replica's expired lock stayed busy until the marker expired). A
`msg_ttl` under a second is sent as 1 s (nats-py sent a 0.5 s throttle window as `Nats-TTL: 0`,
which the server refuses: every claim of it read as a store outage).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import orjson

KV_OP = "KV-Operation"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
DELETED = (b"DEL", b"PURGE")
NO_MESSAGE = 10037  # JSNoMessageFoundErr
WRONG_LAST = (10071, 10164)  # JSStreamWrongLastSequenceErrF / ...ConstantErr


class Replies:
    """One wildcard inbox subscription answering every request sent through it."""

    def __init__(self, nc: Any, *, timeout_s: float) -> None:
        self._nc, self.timeout_s = nc, timeout_s
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._next = itertools.count()
        self._prefix = ""

    async def start(self) -> Replies:
        self._prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(self._prefix + "*", cb=self._answer)
        return self

    async def _answer(self, msg: Any) -> None:
        waiting = self._waiting.pop(msg.subject, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(msg)

    def _expire(self, reply: str) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        waiting = self._waiting.pop(reply, None)
        if waiting is not None and not waiting.done():
            waiting.set_exception(NatsTimeout())

    async def request(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> Any:
        """The answer to `payload` on `subject`; raises on timeout and on no responders."""
        reply = f"{self._prefix}{next(self._next)}"
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[Any] = loop.create_future()
        self._waiting[reply] = waiting
        timer = loop.call_later(self.timeout_s, self._expire, reply)
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
            msg = await waiting
        finally:
            timer.cancel()
            self._waiting.pop(reply, None)
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            from nats.errors import NoRespondersError

            raise NoRespondersError
        return msg


class KvWire:
    """Bucket `name`'s per-injury calls; reads go to the stream leader (`STREAM.MSG.GET`)."""

    def __init__(self, replies: Replies, kv: Any, *, name: str, api_prefix: str) -> None:
        self._replies, self._kv, self._name = replies, kv, name
        self._pre = f"$KV.{name}."
        self._get_subject = f"{api_prefix}.STREAM.MSG.GET.KV_{name}"

    def __getattr__(self, attr: str) -> Any:  # the calls not made per injury: nats-py's
        if attr.startswith("__") or attr == "_kv":  # copy/pickle probe before `_kv` exists
            raise AttributeError(attr)
        return getattr(self._kv, attr)

    async def _publish(self, key: str, value: bytes, headers: dict[str, str] | None) -> int:
        msg = await self._replies.request(self._pre + key, value, headers)
        answer = orjson.loads(msg.data)
        error = answer.get("error")
        if error is not None:
            from nats.js.errors import APIError, KeyWrongLastSequenceError

            if error.get("err_code") in WRONG_LAST:
                raise KeyWrongLastSequenceError(description=error.get("description"))
            APIError.from_error(error)  # raises
        return int(answer["seq"])

    async def put(self, key: str, value: bytes) -> int:
        return await self._publish(key, value, None)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        return await self._publish(key, value, {EXPECTED_LAST: str(last or 0)})

    async def create(self, key: str, value: bytes, msg_ttl: float | None = None) -> int:
        """Write `key` only if it has no value (absent, deleted or purged)."""
        from nats.js.errors import KeyWrongLastSequenceError

        headers = {EXPECTED_LAST: "0"}
        if msg_ttl is not None:  # whole seconds as nats-py sends them, at least 1 (not "0")
            headers["Nats-TTL"] = str(max(1, int(msg_ttl)))
        try:
            return await self._publish(key, value, headers)
        except KeyWrongLastSequenceError:
            marker = await self._last(key)
            if marker is None or marker[2] not in DELETED:
                raise
            headers[EXPECTED_LAST] = str(marker[1])
            return await self._publish(key, value, headers)

    async def delete(self, key: str, last: int | None = None) -> bool:
        headers = {KV_OP: "DEL"}
        if last and last > 0:
            headers[EXPECTED_LAST] = str(last)
        await self._publish(key, b"", headers)
        return True

    async def get(self, key: str) -> Any:
        """The key's entry; `KeyNotFoundError` when it has none (or was deleted or purged)."""
        from nats.js.errors import KeyNotFoundError
        from nats.js.kv import KeyValue

        last = await self._last(key)
        if last is None or last[2] in DELETED:
            raise KeyNotFoundError
        return KeyValue.Entry(self._name, key, last[0], last[1], None, None, None)

    async def _last(self, key: str) -> tuple[bytes, int, bytes] | None:
        """The key's last message as (value, revision, KV operation), None if it has none."""
        request = orjson.dumps({"last_by_subj": self._pre + key})
        msg = await self._replies.request(self._get_subject, request, None)
        answer = orjson.loads(msg.data)
        error = answer.get("error")
        if error is not None:
            if error.get("err_code") == NO_MESSAGE:
                return None
            from nats.js.errors import APIError

            APIError.from_error(error)  # raises
        stored = answer["message"]
        data = stored.get("data")
        hdrs = stored.get("hdrs")
        return (
            base64.b64decode(data) if data else b"",
            int(stored["seq"]),
            _operation(base64.b64decode(hdrs)) if hdrs else b"",
        )


def _operation(headers: bytes) -> bytes:
    """The `KV-Operation` header's value in a stored message's header block, or b"". A marker
    the server left where a value ran out (`Nats-Marker-Reason`, buckets with a limit marker
    TTL: `nats kv add --marker-ttl`) is a purge, as nats.go reads it: the key has no value."""
    for line in headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"kv-operation":
            return value.strip()
        if name == b"nats-marker-reason":
            return b"PURGE"
    return b""
