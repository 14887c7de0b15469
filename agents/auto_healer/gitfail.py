"""What a failed git command means (retried or not), and a branch-name-safe form of a text."""

from __future__ import annotations

import hashlib
import re

import git

from auto_healer.errors import HealFailed, TransientError

# Stderr fragments of git failures that may pass: a moved remote, the network, a lock.
_TRANSIENT = re.compile(
    r"\[rejected\]|non-fast-forward|fetch first|failed to update ref|cannot lock ref"
    r"|stale info|could not resolve host|connection (refused|reset|timed out)"
    r"|operation timed out|could not read from remote|remote end hung up|early eof"
    r"|rpc failed|unable to access|index\.lock|temporarily unavailable|did not complete in",
    re.IGNORECASE,
)


def git_error(exc: git.GitCommandError, doing: str) -> TransientError | HealFailed:
    """Classify a git failure: transient ones (allow-listed) are retried, the rest are not."""
    # `push --porcelain` reports a rejected ref on stdout, the rest on stderr: classify both.
    stderr = str(exc.stderr or "").strip().removeprefix("stderr:").strip(" '")
    stdout = str(exc.stdout or "").strip().removeprefix("stdout:").strip(" '")
    text = "\n".join(t for t in (stderr, stdout) if t) or str(exc)
    tail = " | ".join(line.strip() for line in text.splitlines()[-4:] if line.strip())
    cls = TransientError if _TRANSIENT.search(text) else HealFailed
    return cls(f"git {doing} failed: {tail}")


def safe_ref(text: str) -> str:
    """A branch-name-safe form of an injury id."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:60].strip("-.")  # `..` is not allowed in a ref
    while cleaned.endswith(".lock"):  # neither is a `.lock` suffix
        cleaned = cleaned.removesuffix(".lock").strip("-.")
    return cleaned or hashlib.sha256(text.encode()).hexdigest()[:16]
