"""The `auto-healer` command line: validate, match, heal, schema, demo (and the agent's run).

Exit status: 0 when every injury was healed, skipped or escalated; 1 when any failed or was
rejected (or, for `match`, when no playbook matches); 2 for usage or configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from auto_healer import __version__
from auto_healer.admission import Gate, Rejection
from auto_healer.errors import ConfigError, HealFailed, InjuryRejected, LinkLost, TransientError
from auto_healer.inputs import input_name, read_text
from auto_healer.logs import configure_logging, redact_url
from auto_healer.oneshot import heal_once
from auto_healer.playbooks import load_playbooks, playbook_json_schema
from auto_healer.report import Format
from auto_healer.settings import Settings, load_settings
from auto_healer.sources import Delivery
from auto_healer.sources.files import read_deliveries, read_injuries

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
log = structlog.get_logger("auto_healer.cli")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        playbooks_dir=getattr(args, "playbooks", None),
        repo_path=getattr(args, "repo", None),
        repo_url=getattr(args, "repo_url", None),
        git_branch=getattr(args, "branch", None),
        dry_run=True if getattr(args, "dry_run", False) else None,
        nats_url=getattr(args, "nats_url", None),
        queue_group=getattr(args, "queue_group", None),
        jetstream=True if getattr(args, "jetstream", False) else None,
        metrics_port=getattr(args, "metrics_port", None),
        source_subjects=getattr(args, "source_subject", None),
    )


def cmd_validate(args: argparse.Namespace) -> int:
    """Load every playbook and report the first problems, with file and line."""
    settings = _settings(args)
    playbooks = load_playbooks(settings.playbooks_dir)
    for p in playbooks:
        steps = ", ".join(s.action for s in p.steps)
        print(f"ok  {p.name:<28} {p.match.injury_type:<26} {steps}  ({p.source})")
    print(f"{len(playbooks)} playbooks valid in {settings.playbooks_dir}")
    return EXIT_OK


def cmd_match(args: argparse.Namespace) -> int:
    """Print the playbook each injury would run: exit 0 if one matches each, 1 if not.

    The input is one injury, or bee-keeper's envelope (free-text entries included)."""
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
    print(json.dumps(playbook_json_schema(), indent=2))
    return EXIT_OK


def cmd_heal(args: argparse.Namespace) -> int:
    """Heal the injuries of a file (or of the injury stream since a time) once, print the
    report, exit by outcome."""
    settings = _settings(args)
    if args.from_stream:
        deliveries = _stream_deliveries(args, settings)
    else:
        stray = [f for f, v in _STREAM_ONLY.items() if getattr(args, v) not in (None, False)]
        if stray:
            raise ConfigError(f"{', '.join(stray)}: only with --from-stream")
        deliveries = read_deliveries(args.injuries)
    fmt: Format = args.format or ("text" if sys.stdout.isatty() else "json")
    return EXIT_OK if heal_once(settings, deliveries, fmt) else EXIT_PROBLEM


_STREAM_ONLY = {
    "--since": "since",
    "--since-run": "since_run",
    "--stream": "stream",
    "--nats-url": "nats_url",
}


def _stream_deliveries(args: argparse.Namespace, settings: Settings) -> list[Delivery]:
    """The injuries the stream captured since `--since`/`--since-run` (see `nats_stream`)."""
    from auto_healer.sources import nats_stream

    if args.since is not None:
        since = nats_stream.parse_since(args.since)
    elif args.since_run:
        since = nats_stream.since_run(os.environ)
    else:
        raise ConfigError("--from-stream needs --since TIME or --since-run")
    url = settings.nats_url or DEFAULT_NATS_URL
    return nats_stream.read_stream(settings.nats, url, since=since, stream=args.stream)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the cluster agent on the bloodstream until SIGTERM/SIGINT."""
    from auto_healer.service import serve

    settings = _settings(args)
    asyncio.run(serve(settings))
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish injuries from a file to `aura.hive.injury`, as bee-keeper does."""
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
    url = settings.nats_url or DEFAULT_NATS_URL
    sent = asyncio.run(
        publish_injuries(settings, url, good, msg_id=args.msg_id, jetstream=args.wait_ack)
    )
    print(f"published {sent} injuries to {redact_url(url)}", file=sys.stderr)
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    """Print bloodstream messages (default `aura.hive.>`), pretty-printed."""
    from auto_healer.tools import tail

    settings = _settings(args)
    url = settings.nats_url or DEFAULT_NATS_URL
    asyncio.run(tail(settings, url, args.subject, raw=args.raw, count=args.count))
    return EXIT_OK


def cmd_setup_nats(args: argparse.Namespace) -> int:
    """Create every stream, the consumer and the KV buckets, replicated, as an admin."""
    from auto_healer.tools import setup_nats

    settings = _settings(args)
    url = settings.nats_url or DEFAULT_NATS_URL
    replicas = asyncio.run(setup_nats(settings, url, replicas=args.replicas))
    for name, count in replicas.items():
        print(f"ok  {name:<28} replicas={count}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a heal end to end on a temporary repository with a bare remote."""
    from auto_healer.demo import run_demo

    return run_demo(_settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auto-healer",
        description="Heal injuries from the Aura Hive bloodstream with declarative playbooks.",
    )
    parser.add_argument("--version", action="version", version=f"auto-healer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_: str,
        *,
        playbooks: bool = True,
        repo: bool = False,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        if playbooks:
            p.add_argument(
                "--playbooks",
                metavar="DIR",
                type=Path,
                help="playbooks directory (env PLAYBOOKS_DIR, default ./playbooks)",
            )
        if repo:
            group = p.add_mutually_exclusive_group()
            group.add_argument(
                "--repo",
                metavar="PATH",
                type=Path,
                help="existing checkout to heal (env REPO_PATH, default .)",
            )
            group.add_argument(
                "--repo-url",
                metavar="URL",
                help="clone this URL into WORK_DIR and heal it (env REPO_URL)",
            )
            p.add_argument("--branch", help="branch to heal (env GIT_BRANCH, default current)")
            p.add_argument(
                "--dry-run", action="store_true", help="show the plan, change nothing (env DRY_RUN)"
            )
        return p

    add("validate", cmd_validate, "check every playbook; report errors with file and line")
    p = add("match", cmd_match, "print the playbook an injury would run")
    p.add_argument("injury", metavar="INJURY.json", help="one injury as JSON ('-' for stdin)")
    add("schema", cmd_schema, "print the JSON Schema of the playbook format", playbooks=False)
    p = add("heal", cmd_heal, "heal injuries from a file or the stream once and report", repo=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "injuries",
        metavar="INJURIES",
        nargs="?",
        help="a JSON file (one injury or a list), JSON Lines, or '-' for stdin",
    )
    source.add_argument(
        "--from-stream",
        action="store_true",
        help="instead of a file: the injuries the JetStream stream capturing aura.hive.injury "
        "holds since --since/--since-run, up to its last message now",
    )
    since = p.add_mutually_exclusive_group()
    since.add_argument(
        "--since",
        metavar="TIME",
        help="with --from-stream: ISO-8601 time (no zone = UTC), Unix epoch, or a duration "
        "ago like 15m, 2h, 1d",
    )
    since.add_argument(
        "--since-run",
        action="store_true",
        help="with --from-stream: since $GITHUB_RUN_STARTED_AT (the audit run's start)",
    )
    p.add_argument(
        "--stream",
        metavar="NAME",
        help="with --from-stream: the stream to read (default: the one capturing "
        "aura.hive.injury, e.g. AURA_INJURIES)",
    )
    p.add_argument(
        "--nats-url",
        help="with --from-stream: NATS server(s) (env NATS_URL, default nats://127.0.0.1:4222)",
    )
    p.add_argument(
        "--format",
        choices=["text", "json", "markdown"],
        help="report format (default: text on a TTY, else json)",
    )
    p = add("run", cmd_run, "run the cluster agent on the NATS bloodstream", repo=True)
    p.add_argument(
        "--nats-url",
        help="NATS server(s), comma-separated (env NATS_URL; default: start an embedded server)",
    )
    p.add_argument("--queue-group", help="queue group (env QUEUE_GROUP, default auto-healer)")
    p.add_argument(
        "--source-subject",
        action="append",
        metavar="SUBJECT",
        help="also take the Hive's alerts on SUBJECT as injuries, e.g. 'aura.hive.events.alert_*' "
        "(repeatable; env SOURCE_SUBJECTS, comma-separated)",
    )
    p.add_argument(
        "--jetstream",
        action="store_true",
        help="at-least-once: durable JetStream consumer (env JETSTREAM)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve /metrics, /healthz, /readyz on this port (env METRICS_PORT)",
    )
    p = add(
        "publish",
        cmd_publish,
        "publish injuries to aura.hive.injury (like bee-keeper)",
        playbooks=False,
    )
    p.add_argument("injuries", metavar="INJURIES", help="JSON, JSON Lines, or '-' for stdin")
    p.add_argument("--nats-url", help="NATS server (env NATS_URL, default nats://127.0.0.1:4222)")
    p.add_argument(
        "--msg-id",
        action="store_true",
        help="set Nats-Msg-Id to each injury's stable id (JetStream dedup); when signing "
        "(INJURY_SIGNING_KEY) without it, each gets a random uuid4",
    )
    p.add_argument(
        "--wait-ack",
        action="store_true",
        help="publish through JetStream and wait for the stream's ack",
    )
    p = add("tail", cmd_tail, "print bloodstream messages, pretty-printed", playbooks=False)
    p.add_argument("subject", nargs="?", default="aura.hive.>", help="default aura.hive.>")
    p.add_argument("--nats-url", help="NATS server (env NATS_URL, default nats://127.0.0.1:4222)")
    p.add_argument("--raw", action="store_true", help="one canonical JSON line per message")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p = add(
        "setup-nats",
        cmd_setup_nats,
        "create the agent's streams, consumer and KV buckets, replicated (as an admin user)",
        playbooks=False,
    )
    p.add_argument(
        "--nats-url",
        help="NATS server(s) (env NATS_URL, default nats://127.0.0.1:4222); the identity is "
        "NATS_USER/NATS_PASSWORD, NATS_CREDS_FILE, NATS_NKEY_SEED_FILE or NATS_TOKEN",
    )
    p.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 6),
        metavar="N",
        help="replicas of each asset (env NATS_REPLICAS; default: the cluster's size, at most 3)",
    )
    add("demo", cmd_demo, "heal a temporary repository end to end, to see it work")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        env = Settings()
    except Exception:  # an invalid env is reported properly by the command's own load
        env = None
    configure_logging(env.log_format if env else "auto", env.log_level if env else "info")
    try:
        code: int = args.func(args)
    except (ConfigError, InjuryRejected) as exc:
        print(f"auto-healer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TransientError, HealFailed, LinkLost) as exc:  # e.g. the remote is unreachable
        print(f"auto-healer: error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
    return code
