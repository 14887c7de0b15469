"""Baseline consumers the agent is measured against, run as their own processes.

    python -m bench.baselines core URL N   a raw nats-py queue subscriber that only decodes JSON
    python -m bench.baselines js URL N     a raw JetStream pull consumer: fetch + decode + ack

Each publishes `bench.done` once it has seen N messages.
"""

from __future__ import annotations

import asyncio
import json
import sys

import nats
import nats.errors


async def core(url: str, n: int) -> None:
    nc = await nats.connect(url)
    seen = 0
    done = asyncio.Event()

    async def on(msg: nats.aio.msg.Msg) -> None:
        nonlocal seen
        json.loads(msg.data)
        seen += 1
        if seen == n:
            done.set()

    await nc.subscribe(
        "aura.hive.injury",
        queue="bench-raw",
        cb=on,
        pending_msgs_limit=10_000_000,
        pending_bytes_limit=2**31,
    )
    await nc.publish("bench.ready", b"")
    await done.wait()
    await nc.publish("bench.done", b"")
    await nc.drain()


async def jetstream(url: str, n: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    psub = await js.pull_subscribe("aura.hive.injury", durable="bench-raw", stream="AURA_INJURIES")
    await nc.publish("bench.ready", b"")
    seen = 0
    while seen < n:
        try:
            msgs = await psub.fetch(batch=100, timeout=1.0)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            json.loads(msg.data)
            await msg.ack()
            seen += 1
    await nc.publish("bench.done", b"")
    await nc.drain()


if __name__ == "__main__":
    mode, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    asyncio.run(core(url, count) if mode == "core" else jetstream(url, count))
