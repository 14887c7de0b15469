"""The one-shot's source: injuries from a file or stdin, one delivery per entry.

A JSON document (one injury or a list) or JSON Lines, read by `inputs` (any bytes give a clear
error) and split by `contracts.split_entries`. Each delivery's subject says where its entry
stood (`injuries.json: line 3`), so a refusal names it. Nothing here is redelivered or settled.
"""

from __future__ import annotations

import time

from auto_healer.contracts import split_entries
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.inputs import input_name, read_text
from auto_healer.sources import Delivery


def read_deliveries(path: str) -> list[Delivery]:
    """Every entry of `path` (`-` for stdin) as a delivery; `ConfigError` for unusable input."""
    name = input_name(path)
    try:
        entries = split_entries(read_text(path))
    except InjuryRejected as exc:
        raise ConfigError(f"{name}: {exc}") from None
    now = time.time()
    return [Delivery(data=data, subject=where, received_at=now) for where, data in entries]
