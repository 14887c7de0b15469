"""The `auto-healer` command line: validate, match, heal, schema, demo (and the agent's run).

Exit status: 0 when every injury was healed, skipped or escalated; 1 when any failed or was
rejected (or, for `match`, when no playbook matches); 2 for usage or configuration errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from auto_healer.cli_parser import build_parser
from auto_healer.errors import ConfigError, HealFailed, InjuryRejected, LinkLost, TransientError

if TYPE_CHECKING:  # each command imports what it uses, so `heal` starts fast (no nats, httpx)
    from auto_healer.settings import Settings
    from auto_healer.sources import Delivery

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE
GC_YOUNG = 20_000  # allocations between young collections in the agent (default 700)


def _settings(args: argparse.Namespace) -> Settings:
    from auto_healer.settings import load_settings

    return load_settings(
        playbooks_dir=getattr(args, "playbooks", None),
        repo_path=getattr(args, "repo", None),
        repo_url=getattr(args, "repo_url", None),
        git_branch=getattr(args, "branch", None),
        dry_run=True if getattr(args, "dry_run", False) or getattr(args, "check", False) else None,
        nats_url=getattr(args, "nats_url", None),
        queue_group=getattr(args, "queue_group", None),
        jetstream=True if getattr(args, "jetstream", False) else None,
        metrics_port=getattr(args, "metrics_port", None),
        console=True if getattr(args, "console", False) else None,
        source_subjects=getattr(args, "source_subject", None),
        nats_creds_file=getattr(args, "creds", None),
        nats_user=getattr(args, "user", None),
        nats_password=getattr(args, "password", None),
    )


def cmd_validate(args: argparse.Namespace) -> int:
    """Load every playbook and report the first problems, with file and line."""
    from auto_healer.playbooks import load_playbooks

    settings = _settings(args)
    playbooks = load_playbooks(settings.playbooks_dir, breaker_max_heals=settings.breaker_max_heals)
    for p in playbooks:
        steps = ", ".join(s.action for s in p.steps)
        print(f"ok  {p.name:<28} {p.match.injury_type:<26} {steps}  ({p.source})")
    print(f"{len(playbooks)} playbooks valid in {settings.playbooks_dir}")
    return EXIT_OK


def cmd_match(args: argparse.Namespace) -> int:
    """Print the playbook each injury would run: exit 0 if one matches each, 1 if not.

    The input is one injury, or bee-keeper's envelope (free-text entries included)."""
    import json
    import time

    from auto_healer.admission import Gate, Rejection
    from auto_healer.inputs import input_name, read_text
    from auto_healer.playbooks import load_playbooks
    from auto_healer.sources import Delivery

    settings = _settings(args)
    playbooks = load_playbooks(settings.playbooks_dir)
    name = input_name(args.injury)
    try:
        admitted = Gate().admit(
            Delivery(data=read_text(args.injury).encode(), subject=name, received_at=time.time())
        )
    except InjuryRejected as exc:
        raise InjuryRejected(f"{name}: {exc}") from None
    refused = [a for a in admitted if isinstance(a, Rejection)]
    if refused:
        raise InjuryRejected(f"{name}: " + "; ".join(r.reason for r in refused))
    found: list[dict[str, object]] = []
    missing = 0
    for parsed in (a for a in admitted if not isinstance(a, Rejection)):
        playbook = playbooks.match(parsed.injury)
        if playbook is None:
            missing += 1
            what = parsed.injury.description or parsed.injury.injury_type
            print(f"no playbook matches {parsed.injury.injury_type!r}: {what[:200]!r}")
            continue
        adopted = playbook.adopt(parsed)
        found.append(
            {
                "playbook": playbook.name,
                "source": playbook.source,
                "steps": [s.action for s in playbook.steps],
                "auto_heal": adopted.injury.auto_heal,
                "severity": adopted.injury.severity.value,
                "injury_id": parsed.id,
            }
        )
    if found:
        print(json.dumps(found[0] if len(admitted) == 1 else found, indent=2))
    return EXIT_PROBLEM if missing or not admitted else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the playbook format (for editors)."""
    import json

    from auto_healer.playbooks import playbook_json_schema

    print(json.dumps(playbook_json_schema(), indent=2))
    return EXIT_OK


def cmd_heal(args: argparse.Namespace) -> int:
    """Heal the injuries of a file (or of the injury stream since a time) once, print the
    report, exit by outcome."""
    from auto_healer.oneshot import heal_once
    from auto_healer.report import Format
    from auto_healer.sources.files import read_deliveries
    from auto_healer.terminal import is_terminal

    settings = _settings(args)
    if args.from_stream:
        deliveries = _stream_deliveries(args, settings)
    else:
        stray = [f for f, v in _STREAM_ONLY.items() if getattr(args, v) not in (None, False)]
        if stray:
            raise ConfigError(f"{', '.join(stray)}: only with --from-stream")
        deliveries = read_deliveries(args.injuries)
    fmt: Format = args.format or ("text" if is_terminal(sys.stdout) else "json")
    return EXIT_OK if heal_once(settings, deliveries, fmt, check=args.check) else EXIT_PROBLEM


_STREAM_ONLY = {
    "--since": "since",
    "--since-run": "since_run",
    "--stream": "stream",
    "--nats-url": "nats_url",
}


def _stream_deliveries(args: argparse.Namespace, settings: Settings) -> list[Delivery]:
    """The injuries the stream captured since `--since`/`--since-run` (see `nats_stream`)."""
    from auto_healer.clients import client_url
    from auto_healer.sources import nats_stream

    if args.since is not None:
        since = nats_stream.parse_since(args.since)
    elif args.since_run:
        since = nats_stream.since_run(os.environ)
    else:
        raise ConfigError("--from-stream needs --since TIME or --since-run")
    url = client_url(settings.nats_url)
    return nats_stream.read_stream(settings.nats, url, since=since, stream=args.stream)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the cluster agent on the bloodstream until SIGTERM/SIGINT."""
    import asyncio
    import gc

    from auto_healer.service import serve

    settings = _settings(args)
    # What start-up loaded lives as long as the process: no collection looks at it again. A
    # burst allocates many short-lived containers (freed by their counts) and queues thousands
    # of messages, which the default young threshold (700) would traverse again and again.
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 20, 20)
    asyncio.run(serve(settings))
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish injuries from a file to `aura.hive.injury`, as bee-keeper does."""
    import asyncio

    from auto_healer.clients import client_url
    from auto_healer.inputs import input_name, read_text
    from auto_healer.logs import redact_url
    from auto_healer.sources.files import read_injuries
    from auto_healer.tools import publish_injuries

    settings = _settings(args)
    name = input_name(args.injuries)
    try:
        entries = read_injuries(read_text(args.injuries))
    except InjuryRejected as exc:
        raise ConfigError(f"{name}: {exc}") from None
    bad = [e for e in entries if isinstance(e, InjuryRejected)]
    if bad:
        raise ConfigError(f"{name}: " + "; ".join(str(e) for e in bad))
    good = [e for e in entries if not isinstance(e, InjuryRejected)]
    url = client_url(settings.nats_url)
    sent = asyncio.run(
        publish_injuries(settings, url, good, msg_id=args.msg_id, jetstream=args.wait_ack)
    )
    print(f"published {sent} injuries to {redact_url(url)}", file=sys.stderr)
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    """Print bloodstream messages (default `aura.hive.>`), pretty-printed."""
    import asyncio

    from auto_healer.clients import client_url
    from auto_healer.tools import tail

    settings = _settings(args)
    url = client_url(settings.nats_url)
    asyncio.run(tail(settings, url, args.subject, raw=args.raw, count=args.count))
    return EXIT_OK


def cmd_setup_nats(args: argparse.Namespace) -> int:
    """Create every stream, the consumer and the KV buckets, replicated, as an admin."""
    import asyncio

    from auto_healer.clients import client_url
    from auto_healer.tools import setup_nats

    settings = _settings(args)
    url = client_url(settings.nats_url)
    replicas = asyncio.run(setup_nats(settings, url, replicas=args.replicas))
    for name, count in replicas.items():
        print(f"ok  {name:<28} replicas={count}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a heal end to end on a temporary repository with a bare remote."""
    from auto_healer.demo import run_demo

    return run_demo(_settings(args))


CONTROLS = (
    "pause",
    "resume",
    "reset-breaker",
    "approve",
    "reject",
    "history",
    "show",
    "dead-letters",
    "replay",
)


def _control(name: str) -> Callable[[argparse.Namespace], int]:
    """An operator command (`control_cli`), imported only when it runs."""

    def run(args: argparse.Namespace) -> int:
        from auto_healer.control_cli import COMMANDS as CONTROL_COMMANDS

        return CONTROL_COMMANDS[name](args)

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": cmd_validate,
    "match": cmd_match,
    "schema": cmd_schema,
    "heal": cmd_heal,
    "run": cmd_run,
    "publish": cmd_publish,
    "tail": cmd_tail,
    "demo": cmd_demo,
    "setup-nats": cmd_setup_nats,
    **{name: _control(name) for name in CONTROLS},
}


def _import_structlog_plain() -> None:
    """Import structlog without rich when its log lines cannot reach a person.

    structlog imports rich (and pygments) at its own import, only to draw exceptions in its
    console renderer; a command whose stderr is no terminal logs JSON, so that is start-up time
    for nothing (about a sixth of a one-shot heal). rich stays importable for everything else.
    """
    if "structlog" in sys.modules or _stderr_is_terminal():
        return
    blocked = {name: sys.modules.get(name) for name in ("rich", "better_exceptions")}
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        for name, module in blocked.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(COMMANDS)
    args = parser.parse_args(argv)
    _import_structlog_plain()
    from auto_healer.logs import configure_logging
    from auto_healer.settings import Settings

    try:
        env = Settings()
    except Exception:  # an invalid env is reported properly by the command's own load
        env = None
    level = args.log_level or (env.log_level if env else "info")
    configure_logging(env.log_format if env else "auto", level)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
    except (ConfigError, InjuryRejected) as exc:
        print(f"auto-healer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TransientError, HealFailed, LinkLost) as exc:  # e.g. the remote is unreachable
        print(f"auto-healer: error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): quiet, like any Unix tool. Python flushes stdout again
        # at exit, so point it at devnull (the way the Python docs show for SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code
