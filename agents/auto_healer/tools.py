"""Bloodstream tools: `publish` (a bee-keeper-compatible injury publisher), `setup-nats` and `tail`
(like `nats sub "aura.hive.>"`, pretty-printed; JSON and `aura.core.v1.Event` protobuf alike)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from auto_healer.clients import connect_client
from auto_healer.contracts import MSG_ID_HEADER, SUBJECT_INJURY, ParsedInjury
from auto_healer.encoding import decode
from auto_healer.jsontext import canonical_json
from auto_healer.logs import redact_url
from auto_healer.settings import Settings
from auto_healer.signing import signed_headers


async def publish_injuries(
    settings: Settings,
    url: str,
    injuries: list[ParsedInjury],
    *,
    msg_id: bool,
    jetstream: bool = False,
) -> int:
    """Publish injuries exactly as bee-keeper does (JSON on `aura.hive.injury`).

    With `msg_id`, each carries `Nats-Msg-Id` = its stable id, so JetStream drops republished
    duplicates. With a signing key in the settings, each is signed the v2 way (see
    `auto_healer.signing`) and always has a msg-id: its stable id, else a random uuid4.
    """
    nc = await connect_client(settings.nats, url, name="auto-healer-publish")
    key = settings.injury_signing_key
    try:
        js = nc.jetstream() if jetstream else None
        for parsed in injuries:
            body = json.dumps(parsed.raw).encode()
            headers: dict[str, str] = {}
            if msg_id:
                headers[MSG_ID_HEADER] = parsed.id
            if key is not None:
                headers = signed_headers(
                    body,
                    key.get_secret_value().encode(),
                    headers,
                    msg_id=parsed.id if msg_id else str(uuid.uuid4()),
                )
            if js is not None:
                await js.publish(SUBJECT_INJURY, body, headers=headers or None)
            else:
                await nc.publish(SUBJECT_INJURY, body, headers=headers or None)
        await nc.flush()
    finally:
        await nc.drain()
    return len(injuries)


def _pretty(msg: Any) -> str:
    """A timestamped line with the subject, one `Key: value` line per header, then the body:
    either encoding decoded to indented JSON, else the text."""
    stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
    try:
        text = json.dumps(decode(msg.data, msg.headers), indent=2, ensure_ascii=False)
    except ValueError:
        text = msg.data.decode(errors="replace")
    headers = "".join(f"\n{k}: {v}" for k, v in (msg.headers or {}).items())
    return f"[{stamp}] {msg.subject}{headers}\n{text}"


def _raw(msg: Any) -> str:
    """One line: the body decoded from either encoding as canonical JSON, else as text."""
    try:
        return canonical_json(decode(msg.data, msg.headers)).decode()
    except ValueError:
        return bytes(msg.data).decode(errors="replace")


async def tail(
    settings: Settings, url: str, subject: str, *, raw: bool = False, count: int | None = None
) -> None:
    """Print every message on `subject` until interrupted (or `count` messages)."""
    nc = await connect_client(settings.nats, url, name="auto-healer-tail")
    seen = asyncio.Event()
    received = 0

    async def show(msg: Any) -> None:
        nonlocal received
        line = _raw(msg) if raw else _pretty(msg)
        print(line, flush=True)
        received += 1
        if count is not None and received >= count:
            seen.set()

    try:
        await nc.subscribe(subject, cb=show)
        print(
            f"# listening on {subject} at {redact_url(url)} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        await seen.wait()
    finally:
        await nc.drain()


async def setup_nats(settings: Settings, url: str, *, replicas: int | None) -> dict[str, int]:
    """`setup-nats`: create the agent's assets with an admin identity (see `assets`)."""
    from auto_healer.assets import default_replicas
    from auto_healer.assets import setup_nats as create_assets

    nc = await connect_client(settings.nats, url, name="auto-healer-setup-nats")
    try:
        made = await create_assets(
            nc,
            replicas=replicas or settings.nats.replicas,
            max_deliver=settings.max_deliver,
            ack_wait_s=settings.ack_wait_s,
            lock_ttl_s=settings.lock_ttl_s,
        )
        wanted = replicas or settings.nats.replicas or default_replicas(nc)
        return made | await _control_assets(nc, settings, replicas=wanted)
    finally:
        await nc.drain()


async def _control_assets(nc: Any, settings: Settings, *, replicas: int) -> dict[str, int]:
    """The operator controls' bucket and the heal history stream (see `controls`, `history`)."""
    from auto_healer.controls import BUCKET_CONTROLS
    from auto_healer.history import HISTORY_STREAM, ensure_history
    from auto_healer.kvcell import KvCell

    js = nc.jetstream()
    await KvCell.open(js, BUCKET_CONTROLS, replicas=replicas)
    await ensure_history(js, settings.controls, required=True, replicas=replicas)
    names = [f"KV_{BUCKET_CONTROLS}", HISTORY_STREAM]
    return {n: (await js.stream_info(n)).config.num_replicas or 1 for n in names}
