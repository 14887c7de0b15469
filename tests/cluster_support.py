"""Helpers for tests on a real 3-node JetStream cluster: start it, wait for it, find leaders."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from auto_healer.embedded import NatsCluster

from tests.agent_support import wait_until


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed nats-server processes with JetStream, on loopback, each its own store."""
    with NatsCluster(tmp_path / "cluster", size=3) as cluster:
        asyncio.run(wait_for_jetstream(cluster.url))
        yield cluster


async def connect(url: str) -> Any:
    """A client to every node (comma-separated URLs), reconnecting quickly after a node loss."""
    return await nats.connect(
        servers=url.split(","), reconnect_time_wait=0.2, max_reconnect_attempts=-1
    )


async def wait_for_jetstream(url: str, timeout_s: float = 30.0) -> None:
    """Wait until the cluster has a JetStream meta leader and can place an R3 stream."""
    nc = await connect(url)
    js = nc.jetstream()

    async def placed() -> bool:
        try:
            await js.add_stream(name="PROBE", subjects=["probe"], num_replicas=3)
            await js.delete_stream("PROBE")
        except Exception:
            return False
        return True

    try:
        await wait_until(placed, timeout_s, "a JetStream meta leader and three peers")
    finally:
        await nc.close()


async def leader(js: Any, stream: str) -> str:
    """The node (`n1`..`n3`) leading a stream (a KV bucket is the stream `KV_<bucket>`)."""
    info = await js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
    return str(info.cluster.leader)


async def wait_all_current(js: Any, streams: list[str], timeout_s: float = 60.0) -> None:
    """Wait until every stream has a leader and all its replicas are current (caught up)."""

    async def current() -> bool:
        for stream in streams:
            try:
                c = (await js.stream_info(stream)).cluster
            except Exception:
                return False
            if c is None or not c.leader:
                return False
            if any(not p.current or p.offline for p in c.replicas or []):
                return False
        return True

    await wait_until(current, timeout_s, f"{streams} led and current", interval_s=0.2)
