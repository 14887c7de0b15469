"""The operator controls as calls, shared by the CLI (`control_cli`) and the console
(`console`): one code path, whoever the operator and whatever the screen.

Each takes the controls bucket as `Cells` and a connection (for the announcement that puts the
control in the history); the CLI opens both for one command, the console uses the agent's own.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from auto_healer import approvals, breaker, controls, history
from auto_healer.contracts import DomainEvent, event_subject
from auto_healer.controls import Cells


async def announce(nc: Any, control: str, **meta: Any) -> None:
    """Tell the bloodstream (and so the history) what was done, by whom, and when."""
    event = DomainEvent(
        success=True,
        event_type=history.CONTROL_EVENT,
        timestamp=time.time(),
        metadata={"control": control, **{k: v for k, v in meta.items() if v is not None}},
    )
    await nc.publish(
        event_subject(history.CONTROL_EVENT),
        json.dumps(event.model_dump(exclude_none=True)).encode(),
    )
    await nc.flush(timeout=5)


async def pause(
    cells: Cells, nc: Any, *, by: str, reason: str, playbook: str | None, via: str | None = None
) -> controls.Pause:
    """Pause every replica (or one playbook), and say so."""
    state = await controls.pause(cells, by=by, reason=reason, playbook=playbook)
    await announce(nc, "pause", by=by, reason=reason, playbook=playbook, via=via)
    return state


async def resume(
    cells: Cells, nc: Any, *, by: str, playbook: str | None, via: str | None = None
) -> None:
    """Lift a pause, and say so."""
    await controls.resume(cells, playbook=playbook)
    await announce(nc, "resume", by=by, playbook=playbook, via=via)


async def reset_breaker(
    cells: Cells,
    nc: Any,
    *,
    by: str,
    repo: str,
    via: str | None = None,
    playbook: str | None = None,
) -> breaker.State | None:
    """Close a repository's breaker, or one playbook's own on it (the state it had, if any),
    and say so."""
    state = await breaker.reset(cells, breaker.scope(repo, playbook))
    await announce(nc, "reset-breaker", by=by, repo=repo, playbook=playbook, via=via)
    return state


async def decide(
    cells: Cells,
    nc: Any,
    injury_id: str,
    *,
    approve: bool,
    by: str,
    reason: str = "",
    via: str | None = None,
    signing_key: bytes | None = None,
    fingerprint: str | None = None,
) -> approvals.Request:
    """Approve or reject a held injury (`ConfigError` when there is nothing to decide); signed
    with `signing_key` (the agents' INJURY_SIGNING_KEY), which replicas that have it require;
    only the request `fingerprint` names when given (a page's decision on what it showed)."""
    request = await approvals.decide_request(
        cells,
        injury_id,
        approve=approve,
        by=by,
        reason=reason,
        signing_key=signing_key,
        fingerprint=fingerprint,
    )
    await announce(
        nc,
        request.state,
        by=request.by,
        injury_id=request.injury_id,
        reason=reason,
        via=via,
        signed=request.signature is not None,
    )
    return request


def replay_id() -> str:
    """A new injury id for a replayed dead letter (its `Nats-Msg-Id`)."""
    return f"replay-{uuid.uuid4().hex}"


async def replay(
    nc: Any,
    js: Any,
    seq: int,
    *,
    by: str,
    via: str | None = None,
    signing_key: bytes | None = None,
) -> tuple[str, str | None]:
    """Publish dead letter `seq` again to `aura.hive.injury` under a new injury id, take it off
    the dead letters, and say so: (the new id, the old one if it had one). With `signing_key`
    it is signed anew, if its publisher's own signature holds (see `signing.resign_kept`)."""
    from auto_healer.sources.dead_letters import republish

    new_id = replay_id()
    old = await republish(nc, js, seq, new_id, signing_key=signing_key)
    await announce(nc, "replay", by=by, injury_id=new_id, replay_of=old, seq=seq, via=via)
    return new_id, old
