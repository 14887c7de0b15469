"""The one-shot's source: injuries from a file or stdin, one delivery per entry.

A JSON document (one injury or a list) or JSON Lines, read by `inputs` (any bytes give a clear
error) and split by `contracts.split_entries`. Each delivery's subject says where its entry
stood (`injuries.json: line 3`), so a refusal names it. Nothing here is redelivered or settled.
"""

from __future__ import annotations

import time
from typing import Any

from auto_healer.contracts import ParsedInjury, parse_injury
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.inputs import input_name, read_text
from auto_healer.jsontext import canonical_json, loads
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


def split_entries(text: str) -> list[tuple[str, bytes]]:
    """The entries of a JSON document (one object or a list) or of JSON Lines, each with where
    it stood (`entry N`, `line N`) and its bytes as one message would carry them.

    JSON Lines are split on `\n` (a `\r` before it is JSON whitespace) and nowhere else: a raw
    U+2028 in a string is data. A line that is not UTF-8 keeps its place, as bytes that will be
    refused as "not valid JSON". Only an empty input raises.
    """
    try:
        doc = loads(text)
    except (ValueError, RecursionError):  # not one JSON document: JSON Lines
        doc = _NOT_ONE_DOCUMENT
    if doc is not _NOT_ONE_DOCUMENT:
        entries: list[Any] = doc if isinstance(doc, list) else [doc]
        return [(f"entry {i}", _entry_bytes(e)) for i, e in enumerate(entries, 1)]
    lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip(" \t\r")]
    if not lines:
        raise InjuryRejected("no injuries: the input is empty")
    return [(f"line {n}", line.encode("utf-8", "surrogateescape")) for n, line in lines]


_NOT_ONE_DOCUMENT = object()


def _entry_bytes(entry: Any) -> bytes:
    """An entry as the compact JSON a publisher would send (a value JSON cannot hold stays
    unparseable, so it is refused in its place)."""
    try:
        return canonical_json(entry)
    except (TypeError, ValueError, RecursionError):
        return b"\x00unserialisable entry"


def read_injuries(text: str) -> list[ParsedInjury | InjuryRejected]:
    """Injuries from a JSON document or JSON Lines (see `split_entries`).

    Each entry is validated on its own: a bad one is an `InjuryRejected` in its place, naming
    where it stood, so nothing else in the file is lost.
    """
    out: list[ParsedInjury | InjuryRejected] = []
    for where, data in split_entries(text):
        try:
            out.append(parse_injury(data))
        except InjuryRejected as exc:
            out.append(InjuryRejected(f"{where}: {exc}"))
    return out
