"""The one exception tree of auto-healer.

Every error the package raises on purpose derives from `HealerError`. The tree is small on
purpose: what matters to a caller is whether to fix its configuration, reject the input, retry,
or give up.

    HealerError
    ├── ConfigError        bad settings or playbooks: fix and restart (exit 2)
    ├── InjuryRejected     the input is invalid or unsafe: never retried, nothing touched
    ├── TransientError     worth retrying (remote moved, network hiccup, timeout)
    │   └── CoordinationUnavailable  the shared KV store did not answer: no heal was tried
    ├── HealFailed         the heal could not be done (formatter broke, git refused)
    └── LinkLost           the bloodstream connection is gone for good: restart the agent
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HealerError(Exception):
    """Root of every error auto-healer raises on purpose."""


class ConfigError(HealerError):
    """Settings or playbooks are invalid; the message names the file, line and field."""


class InjuryRejected(HealerError):
    """The injury is malformed or asks for something unsafe; it is never retried."""


class TransientError(HealerError):
    """A failure that may pass: the remote moved, the network hiccuped, a timeout."""


class CoordinationUnavailable(TransientError):
    """The coordination store (JetStream KV) did not answer: a timeout, no responders, a
    cluster electing a leader. Nothing was tried on the checkout, so it is not a failed heal."""


class HealFailed(HealerError):
    """The heal could not be completed and retrying will not help."""


class LinkLost(HealerError):
    """The NATS connection closed or stayed down too long; only a restart helps."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
