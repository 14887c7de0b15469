"""The least log level written, as `logs.configure_logging` set it last (everything before).

A hot path asks `enabled(level)` before it builds a line that would be filtered out anyway:
the arguments of a per-injury debug line cost more than structlog's filtered call itself.
Kept apart from `logs` so that any module may ask without importing the terminal code.
"""

from __future__ import annotations

import logging

_least = logging.NOTSET


def set_least(level: int) -> None:
    """Lines below `level` are not written from now on (`logs.configure_logging` says so)."""
    global _least
    _least = level


def enabled(level: int) -> bool:
    """Whether a line at `level` is written."""
    return level >= _least
