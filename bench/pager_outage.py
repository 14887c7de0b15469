"""The pager's outage drill, in real time: `python -m bench.pager_outage [--down-s 60]`.

An agent (core mode) runs against a local nats-server and a local HTTP receiver that is down for
`--down-s` seconds. Injuries that must be paged are published while it is down: distinct
problems, plus a storm of identical ones. Once the receiver is back, every problem must arrive
exactly once (the storm as one page). Prints the figures and exits 1 if any page is missing or
doubled. Too slow for the test suite, which runs the same scenario with a short outage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import nats
from auto_healer.demo import make_repo
from auto_healer.embedded import NatsServer, free_port

from tests.pager_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent


def _injury(path: str, i: int) -> bytes:
    return json.dumps(
        {
            "timestamp": 1735920000.0 + i,
            "injury_type": "unauthorized_directory",
            "affected_path": path,
            "severity": "high",
            "recommended_action": "delete_directory",
            "auto_heal": False,
        }
    ).encode()


async def _publish(url: str, payloads: list[bytes]) -> None:
    nc = await nats.connect(url)
    for p in payloads:
        await nc.publish("aura.hive.injury", p)
    await nc.flush()
    await nc.drain()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--down-s", type=float, default=60.0)
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--storm", type=int, default=1000)
    args = parser.parse_args()
    receiver = Receiver()
    receiver.port = free_port()  # known URL, nothing listening: the pager is down
    with tempfile.TemporaryDirectory(prefix="auto-healer-outage-") as tmp_name:
        tmp = Path(tmp_name)
        _remote, work = make_repo(tmp)
        with NatsServer(tmp / "nats") as server:
            port = free_port()
            env = {
                **os.environ,
                "XDG_STATE_HOME": str(tmp / "state"),
                "LOG_LEVEL": "warning",
                "PAGER_WEBHOOK_URL": receiver.url,
                "PAGER_FORMAT": "generic",
            }
            with open(tmp / "agent.log", "ab") as log:
                agent = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "auto_healer",
                        "run",
                        "--nats-url",
                        server.url,
                        "--repo",
                        str(work),
                        "--playbooks",
                        str(ROOT / "playbooks"),
                        "--metrics-port",
                        str(port),
                    ],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            distinct = [_injury(f"core/src/p{i}/", i) for i in range(args.problems)]
            storm = [_injury("core/src/storm/", 10_000 + i) for i in range(args.storm)]
            started = time.monotonic()
            asyncio.run(_publish(server.url, distinct + storm))
            time.sleep(max(0.0, args.down_s - (time.monotonic() - started)))
            receiver.start()
            back = time.monotonic()
            expected = args.problems + 1
            while len(receiver.delivered) < expected and time.monotonic() - back < 180:
                time.sleep(0.2)
            caught_up = time.monotonic() - back
            time.sleep(5.0)  # anything doubled would arrive now
            agent.terminate()
            agent.wait(60)
            receiver.stop()
    keys = Counter(p["dedup_key"] for p in receiver.delivered)
    doubled = {k: n for k, n in keys.items() if n > 1}
    print(
        f"pager down {args.down_s:.0f} s; published {args.problems} problems + a storm of "
        f"{args.storm} identical injuries"
    )
    print(
        f"delivered {len(receiver.delivered)} pages for {len(keys)} problems "
        f"({expected} expected), {caught_up:.1f} s after the pager came back; "
        f"{len(receiver.requests) - len(receiver.delivered)} failed attempts seen by it; "
        f"doubled: {doubled or 'none'}"
    )
    return 0 if len(keys) == expected and not doubled else 1


if __name__ == "__main__":
    sys.exit(main())
