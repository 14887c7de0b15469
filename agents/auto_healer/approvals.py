"""Approval before a heal: requests kept in the controls bucket until a human decides.

A playbook with `approval: required` does not heal on arrival: the injury (as admitted) and its
plan are written to `approval.<id>` as `pending`, its message is settled, and a page says what
would be done and the two commands to decide. `auto-healer approve ID` (or `reject ID`) moves
the request to `approved` (`rejected`); every replica sees that through its watch of the bucket,
and the one that wins the compare-and-set to `healing` (`closed`) carries it out, so an approval
heals once. A pending request past its `expires_at` is escalated by the first replica to see it.

States: pending → approved → healing → done | pending → rejected → closed | pending → expired.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from auto_healer.controls import APPROVAL_PREFIX, Cells
from auto_healer.coordination import kv_key
from auto_healer.errors import ConfigError


def approval_key(injury_id: str) -> str:
    return APPROVAL_PREFIX + kv_key(injury_id)


@dataclass(frozen=True)
class Request:
    """One injury waiting for (or decided by) a human."""

    injury_id: str
    playbook: str
    state: str
    parsed: dict[str, Any]  # the admitted injury (`ParsedInjury` as JSON)
    plan: str
    requested_at: float
    expires_at: float
    by: str | None = None  # who decided
    decided_at: float | None = None
    reason: str = ""
    owner: str | None = None  # the replica carrying the decision out
    commit: str | None = None

    def dump(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @property
    def fingerprint(self) -> str:
        """Names the request as a human saw it (its plan, when it was asked): a decision taken
        on a page carries it, so a request held again with another plan is not decided by it."""
        seen = f"{self.requested_at!r}\n{self.plan}".encode(errors="surrogatepass")
        return hashlib.sha256(seen).hexdigest()[:16]


def load(value: bytes) -> Request | None:
    try:
        return Request(**json.loads(value))
    except (ValueError, TypeError):
        return None


async def read(cells: Cells, injury_id: str) -> tuple[Request, int] | None:
    found = await cells.read(approval_key(injury_id))
    if found is None:
        return None
    request = load(found[0])
    return (request, found[1]) if request else None


async def ask(cells: Cells, request: Request) -> tuple[bool, Request]:
    """Record a pending request unless one exists: (created, the request as it stands)."""
    if await cells.swap(approval_key(request.injury_id), request.dump(), None):
        return True, request
    found = await read(cells, request.injury_id)
    return False, found[0] if found else request


async def move(
    cells: Cells,
    injury_id: str,
    *,
    frm: tuple[str, ...],
    to: str,
    fingerprint: str | None = None,
    **changes: Any,
) -> Request | None:
    """Move a request from one of `frm` to `to` (compare-and-set); None if another replica or
    human moved it first, it is in none of those states, or it is not the request `fingerprint`
    names."""
    found = await read(cells, injury_id)
    if found is None or found[0].state not in frm:
        return None
    if fingerprint is not None and found[0].fingerprint != fingerprint:
        return None
    moved = replace(found[0], state=to, **changes)
    if await cells.swap(approval_key(injury_id), moved.dump(), found[1]):
        return moved
    return None


async def decide_request(
    cells: Cells,
    injury_id: str,
    *,
    approve: bool,
    by: str,
    reason: str = "",
    fingerprint: str | None = None,
) -> Request:
    """A human's decision on a pending request (`approve` / `reject`), on the very request
    `fingerprint` names when given; `ConfigError` when there is no such request, it was decided
    already, or it is not the one the human saw."""
    to = "approved" if approve else "rejected"
    moved = await move(
        cells,
        injury_id,
        frm=("pending",),
        to=to,
        fingerprint=fingerprint,
        by=by,
        decided_at=time.time(),
        reason=reason,
    )
    if moved is not None:
        return moved
    found = await read(cells, injury_id)
    if found is None:
        raise ConfigError(f"no injury {injury_id!r} awaits approval")
    current = found[0]
    if current.state == "pending" and fingerprint is not None:
        raise ConfigError(
            f"injury {injury_id!r} is held again with another plan since you looked: "
            "reload, read the plan and decide again"
        )
    raise ConfigError(
        f"injury {injury_id!r} is {current.state}"
        + (f" (by {current.by})" if current.by else "")
        + ": nothing to decide"
    )
