"""One process per state directory: an exclusive `flock` held while a clone or an outbox is in
use, so two replicas on one host never share a checkout or drain one outbox twice."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from auto_healer.errors import ConfigError


class StateLock:
    """An exclusive, non-blocking lock on `path`, held until `release()` or process exit."""

    def __init__(self, path: Path, *, what: str, hint: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise ConfigError(
                f"{what} is in use by another auto-healer process ({path}); {hint}"
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
