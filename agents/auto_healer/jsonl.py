"""Append-only JSON Lines state files (the pager's outbox, ledger and dead letters).

Every write is fsync'd before it returns; a rewrite is atomic. Any string Python can hold is
stored and read back equal, and a line torn by a crash is skipped, not fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("auto_healer.jsonl")


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one JSON document a line, and fsync before returning.

    ASCII-only JSON: a lone surrogate (legal in a JSON string, not encodable as UTF-8) is kept
    as an escape, and no line separator other than "\\n" (U+2028, U+0085) is written raw.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = "".join(json.dumps(r, ensure_ascii=True, separators=(",", ":")) + "\n" for r in records)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines file; a torn line (a crash mid-write) is skipped and logged."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in filter(str.strip, text.split("\n")):  # not splitlines(): it splits at U+2028
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            log.warning("state_line_unreadable", path=str(path))
            continue
        if isinstance(doc, dict):
            yield doc


def rewrite_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace a file atomically: a crash leaves either the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, records)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
