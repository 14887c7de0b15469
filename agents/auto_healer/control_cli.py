"""The operator commands: `pause`, `resume`, `reset-breaker`, `approve`, `reject`, `history`
and `show`.

Each is a short-lived client of the bloodstream: it writes the controls bucket every replica
watches (see `controls`, `breaker`) or reads the heal history stream (see `history`). A control
also announces itself on `aura.hive.events.auto_healer_control`, so the history keeps who paused,
resumed or reset what, and when.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
from datetime import UTC, datetime
from typing import Any

from auto_healer import approvals, breaker, control_ops, controls, history
from auto_healer.clients import client_url, connect_client
from auto_healer.errors import ConfigError
from auto_healer.kvcell import KvCell
from auto_healer.settings import Settings, load_settings
from auto_healer.terminal import shown

EXIT_OK, EXIT_PROBLEM = 0, 1


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        nats_url=getattr(args, "nats_url", None),
        nats_creds_file=getattr(args, "creds", None),
        nats_user=getattr(args, "user", None),
        nats_password=getattr(args, "password", None),
    )


async def _with_controls(settings: Settings, act: Any) -> Any:
    """Connect, open the controls bucket, run `act(cells, nc)`, close."""
    nc = await connect_client(settings.nats, client_url(settings.nats_url), name="auto-healer-ctl")
    try:
        try:
            cells = await KvCell.open(nc.jetstream(), controls.BUCKET_CONTROLS)
        except Exception as exc:
            raise ConfigError(
                f"the controls need JetStream (KV) on the server: {exc or type(exc).__name__}"
            ) from None
        return await act(cells, nc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5.0)


def _who(args: argparse.Namespace) -> str:
    return args.by or getpass.getuser()


def cmd_pause(args: argparse.Namespace) -> int:
    """Pause every replica (or one playbook): no heal runs until `resume`."""

    async def act(cells: Any, nc: Any) -> None:
        state = await control_ops.pause(
            cells, nc, by=_who(args), reason=args.reason or "", playbook=args.playbook
        )
        print(state.describe())

    asyncio.run(_with_controls(_settings(args), act))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """Lift a pause: held injuries heal (JetStream mode) as every replica sees it."""

    async def act(cells: Any, nc: Any) -> None:
        await control_ops.resume(cells, nc, by=_who(args), playbook=args.playbook)
        print(f"{'playbook ' + repr(args.playbook) if args.playbook else 'auto-healer'} resumed")

    asyncio.run(_with_controls(_settings(args), act))
    return EXIT_OK


def cmd_reset_breaker(args: argparse.Namespace) -> int:
    """Close a repository's blast-radius breaker and start a new window."""

    async def act(cells: Any, nc: Any) -> breaker.State | None:
        return await control_ops.reset_breaker(
            cells, nc, by=_who(args), repo=args.repo, playbook=args.playbook
        )

    state = asyncio.run(_with_controls(_settings(args), act))
    which = f"playbook {args.playbook}'s breaker" if args.playbook else "breaker"
    if state is None:
        print(
            f"no {which} state for {args.repo!r} (the repo as the agent names it: its remote URL)"
        )
        return EXIT_OK
    was = "open" if state.open else "closed"
    print(f"{which} of {args.repo} reset (it was {was}: {state.count} heals, {state.held} held)")
    return EXIT_OK


def _signing_key(settings: Settings) -> bytes | None:
    key = settings.injury_signing_key
    return key.get_secret_value().encode() if key else None


def _decide(args: argparse.Namespace, *, approve: bool) -> int:
    settings = _settings(args)

    async def act(cells: Any, nc: Any) -> approvals.Request:
        return await control_ops.decide(
            cells,
            nc,
            args.injury_id,
            approve=approve,
            by=_who(args),
            reason=args.reason or "",
            signing_key=_signing_key(settings),
        )

    request = asyncio.run(_with_controls(settings, act))
    signed = " (signed)" if request.signature else ""
    print(
        shown(f"injury {request.injury_id} {request.state} by {request.by}{signed}: {request.plan}")
    )
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve a held injury: one replica heals it."""
    return _decide(args, approve=True)


def cmd_reject(args: argparse.Namespace) -> int:
    """Reject a held injury: it is closed, and its page resolved."""
    return _decide(args, approve=False)


def _read_history(args: argparse.Namespace, since: str) -> list[history.Entry]:
    from auto_healer.sources import nats_stream

    settings = _settings(args)
    deliveries = nats_stream.read_stream(
        settings.nats,
        client_url(settings.nats_url),
        since=nats_stream.parse_since(since),
        stream=history.HISTORY_STREAM,
        subject="aura.hive.events.>",
    )
    return history.entries(deliveries)


def cmd_history(args: argparse.Namespace) -> int:
    """Print what the agents did (and the controls operators used), oldest first."""
    found = history.select(
        _read_history(args, args.since), kind=args.kind, path=args.path, injury_id=None
    )
    if args.format == "json":
        print(json.dumps([e.as_dict() for e in found], indent=2))
    else:
        for e in found:
            print(shown(history.text_line(e)))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print one injury's whole story from the history; exit 1 when the history has none."""
    found = history.select(_read_history(args, args.since), injury_id=args.injury_id)
    if args.format == "json":
        print(json.dumps([e.as_dict() for e in found], indent=2))
    elif found:
        print("\n".join(shown(line) for line in history.story(args.injury_id, found)))
    else:
        print(shown(f"no history for injury {args.injury_id!r} since {args.since}"))
    return EXIT_OK if found else EXIT_PROBLEM


async def _with_stream(settings: Settings, act: Any) -> Any:
    """Connect, run `act(nc, js)`, close."""
    nc = await connect_client(settings.nats, client_url(settings.nats_url), name="auto-healer-ctl")
    try:
        return await act(nc, nc.jetstream())
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5.0)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List the dead letters, newest first: sequence, when, outcome, injury id, reason."""
    from auto_healer.sources.dead_letters import newest

    letters = asyncio.run(
        _with_stream(_settings(args), lambda nc, js: newest(js, limit=args.limit))
    )
    if args.format == "json":
        rows = [
            {
                "seq": d.seq,
                "at": d.at,
                "outcome": d.outcome,
                "injury_id": d.injury_id,
                "reason": d.reason,
                "size": len(d.data),
            }
            for d in letters
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for d in letters:
        when = datetime.fromtimestamp(d.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(shown(f"{d.seq:>6}  {when}  {d.outcome or '-':<9} {d.injury_id or '-'}  {d.reason}"))
    if not letters:
        print("no dead letters")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """Publish a dead letter again under a new injury id (signed anew when this shell has the
    agents' INJURY_SIGNING_KEY and its publisher's own signature holds)."""
    settings = _settings(args)
    signing_key = _signing_key(settings)

    async def act(nc: Any, js: Any) -> tuple[str, str | None]:
        return await control_ops.replay(nc, js, args.seq, by=_who(args), signing_key=signing_key)

    new_id, old = asyncio.run(_with_stream(settings, act))
    print(f"dead letter {args.seq} replayed as injury {new_id}" + (f" (was {old})" if old else ""))
    return EXIT_OK


COMMANDS = {
    "dead-letters": cmd_dead_letters,
    "replay": cmd_replay,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "reset-breaker": cmd_reset_breaker,
    "approve": cmd_approve,
    "reject": cmd_reject,
    "history": cmd_history,
    "show": cmd_show,
}
