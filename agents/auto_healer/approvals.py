"""Approval before a heal: requests kept in the controls bucket until a human decides.

A playbook with `approval: required` does not heal on arrival: the injury (as admitted) and its
plan are written to `approval.<id>` as `pending`, its message is settled, and a page says what
would be done and the two commands to decide. `auto-healer approve ID` (or `reject ID`) moves
the request to `approved` (`rejected`); every replica sees that through its watch of the bucket,
and the one that wins the compare-and-set to `healing` (`closed`) carries it out, so an approval
heals once. A pending request past its `expires_at` is escalated by the first replica to see it.

States: pending → approved → healing → done | pending → rejected → closed | pending → expired.
A request left in `healing` by a replica that died is taken over after
`APPROVAL_RECLAIM_AFTER_S` by another (`stale`).

With `INJURY_SIGNING_KEY` set, a decision is signed (`sign_decision`): an HMAC-SHA256 with that
key over the injury id, the decision, who, when, the revision of the pending request it decides
and a digest of what that request would heal. A replica with the key carries out only a decision
whose signature holds (`decision_holds`), so write access to the bucket alone cannot approve a
heal, or change what an approved one heals.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from auto_healer.controls import APPROVAL_PREFIX, Cells
from auto_healer.coordination import kv_key
from auto_healer.errors import ConfigError
from auto_healer.signing import mac, mac_holds

DECISION_CONTEXT = "aura-approval-v1"


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
    decided_rev: int | None = None  # the revision of the pending request that was decided
    signature: str | None = None  # `sign_decision`, when the decider had the signing key
    healing_since: float | None = None  # when its owner took it to heal

    def stale(self, now: float, reclaim_after_s: float) -> bool:
        """Left in `healing` longer than any heal takes: its owner died mid-heal."""
        since = self.healing_since or self.decided_at or self.requested_at
        return self.state == "healing" and now - since >= reclaim_after_s

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


def _decision_message(request: Request) -> bytes:
    """What a decision's signature covers (see the module docstring)."""
    subject = {
        k: getattr(request, k)
        for k in ("injury_id", "playbook", "parsed", "plan", "requested_at", "expires_at")
    }
    digest = hashlib.sha256(json.dumps(subject, sort_keys=True).encode()).hexdigest()
    decision = "rejected" if request.state in ("rejected", "closed") else "approved"
    # A JSON array: unambiguous whatever the fields hold (a name with a newline, say).
    parts = [request.injury_id, decision, request.by or "", request.decided_at]
    return json.dumps([DECISION_CONTEXT, *parts, request.decided_rev, digest]).encode()


def sign_decision(request: Request, key: bytes) -> Request:
    """The decided request with its signature."""
    return replace(request, signature=mac(key, _decision_message(request)))


def decision_holds(request: Request, key: bytes) -> bool:
    """Whether a decided request carries a valid signature under `key` (constant-time)."""
    if not request.signature or request.decided_rev is None or request.decided_at is None:
        return False
    return mac_holds(key, _decision_message(request), request.signature)


async def move(
    cells: Cells,
    injury_id: str,
    *,
    frm: tuple[str, ...],
    to: str,
    when: Callable[[Request], bool] | None = None,
    **changes: Any,
) -> Request | None:
    """Move a request from one of `frm` to `to` (compare-and-set), if `when` holds for it as
    stored now; None if another replica or human moved it first, or it does not qualify."""
    found = await read(cells, injury_id)
    if found is None or found[0].state not in frm or (when and not when(found[0])):
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
    signing_key: bytes | None = None,
    fingerprint: str | None = None,
) -> Request:
    """A human's decision on a pending request (`approve` / `reject`), signed with
    `signing_key` when given, and on the very request `fingerprint` names when given (a page's
    decision); `ConfigError` when there is no such request, it was decided already, or it is
    not the one the human saw."""
    found = await read(cells, injury_id)
    seen = fingerprint is None or (found is not None and found[0].fingerprint == fingerprint)
    if found is not None and found[0].state == "pending" and seen:
        decided = replace(
            found[0],
            state="approved" if approve else "rejected",
            by=by,
            decided_at=time.time(),
            reason=reason,
            decided_rev=found[1],
        )
        if signing_key:
            decided = sign_decision(decided, signing_key)
        if await cells.swap(approval_key(injury_id), decided.dump(), found[1]):
            return decided
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
    raise ConfigError(
        f"injury {injury_id!r} is {current.state}"
        + (f" (by {current.by})" if current.by else "")
        + ": nothing to decide"
    )
