"""The command-line clients of the bloodstream (`tail`, `publish`, `heal --from-stream`): their
flags, the server they use (flag or NATS_URL, else the running embedded agent's, else the
default) and a connection that fails at once, in one line, when no server answers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auto_healer.errors import ConfigError

if TYPE_CHECKING:  # the flags are built for every command: settings load only when used
    from auto_healer.settings import NatsSettings


def add_client_flags(p: argparse.ArgumentParser) -> None:
    """How a client command reaches NATS: the URL and the credentials."""
    p.add_argument(
        "--nats-url",
        help="NATS server (env NATS_URL; default the embedded agent's, else nats://127.0.0.1:4222)",
    )
    p.add_argument(
        "--creds", metavar="FILE", type=Path, help="credentials file (env NATS_CREDS_FILE)"
    )
    p.add_argument("--user", help="user name (env NATS_USER)")
    p.add_argument("--password", help="password (env NATS_PASSWORD; the env keeps it out of ps)")


def client_url(given: str | None) -> str:
    """The URL given (flag or NATS_URL), else the running embedded server's, else the default
    `nats://127.0.0.1:4222`."""
    from auto_healer.embedded import DEFAULT_URL, running_urls

    if given:
        return given
    running = running_urls()
    return running["client"] if running else DEFAULT_URL


async def connect_client(settings: NatsSettings, url: str, *, name: str) -> Any:
    """A command-line client's connection: when no server answers, fail within a second or
    two with one line (no retries a person would wait for)."""
    from auto_healer.bloodstream import connect  # nats: only for a command that connects

    try:
        return await connect(
            settings,
            url,
            name=name,
            initial_attempts=1,
            connect_timeout_s=0.75,
            retry_wait_s=0.1,
            closes_itself=True,
        )
    except ConfigError as exc:
        if not isinstance(exc.__cause__, OSError | TimeoutError):
            raise
        hint = "is an agent running? `auto-healer run` starts one, or give --nats-url"
        raise ConfigError(f"{exc} ({hint})") from None
