"""The agent's heartbeat on `aura.hive.heartbeat`: liveness with CPU, memory and in-flight count,
fire-and-forget as the seed does for heartbeats, in the events' encoding (`EVENT_ENCODING`)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from auto_healer.contracts import SUBJECT_HEARTBEAT, Heartbeat
from auto_healer.encoding import Encoding, encode
from auto_healer.metrics import Metrics

SERVICE = "auto-healer"


def rss_mib() -> float:
    """Resident memory of this process in MiB (from /proc, else the peak from getrusage)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Heart:
    """Beats every `interval_s`; `beat()` also sends one on demand (e.g. `stopping`)."""

    def __init__(
        self,
        nc: Any,
        metrics: Metrics,
        interval_s: float,
        details: Callable[[], dict[str, Any]],
        *,
        encoding: Encoding = "json",
    ) -> None:
        self.nc, self.metrics, self.interval_s, self.details = nc, metrics, interval_s, details
        self.encoding: Encoding = encoding

    async def run(self) -> None:
        usage = _cpu_seconds(), time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s)
            now = _cpu_seconds(), time.monotonic()
            cpu = 100.0 * (now[0] - usage[0]) / max(1e-6, now[1] - usage[1])
            usage = now
            await self.beat("active", cpu)

    async def beat(self, status: Literal["active", "stopping"], cpu_percent: float = 0.0) -> None:
        beat = Heartbeat(
            status=status,
            timestamp=time.time(),
            service=SERVICE,
            metadata={
                "cpu_percent": round(cpu_percent, 1),
                "memory_mb": round(rss_mib(), 1),
                **self.details(),
            },
        )
        with contextlib.suppress(Exception):  # a lost beat is the next one's problem
            wire = encode(
                SUBJECT_HEARTBEAT,
                beat.model_dump(mode="json"),
                encoding=self.encoding,
                max_payload=int(self.nc.max_payload),
            )
            await self.nc.publish(SUBJECT_HEARTBEAT, wire.data, headers=wire.headers)
            self.metrics.published.labels(topic=SUBJECT_HEARTBEAT).inc()
