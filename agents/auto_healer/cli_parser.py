"""The command line's shape: every sub-command and its flags (the commands are in `cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from auto_healer import __version__
from auto_healer.clients import add_client_flags

Command = Callable[[argparse.Namespace], int]


def build_parser(commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    """The command line: one sub-command per entry of `commands`, each with its flags."""
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
        p.add_argument(
            "--log-level",
            choices=["debug", "info", "warning", "error"],
            help="log level (env LOG_LEVEL, default info)",
        )
        if playbooks:
            p.add_argument(
                "--playbooks",
                metavar="DIR",
                type=Path,
                help="playbooks directory (env PLAYBOOKS_DIR; default ./playbooks if it exists, "
                "else the shipped ones)",
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

    add("validate", commands["validate"], "check every playbook; report errors with file and line")
    p = add("match", commands["match"], "print the playbook an injury would run")
    p.add_argument(
        "injury",
        metavar="INJURY.json",
        help="one injury, or an envelope of them, as JSON ('-' for stdin)",
    )
    add(
        "schema",
        commands["schema"],
        "print the JSON Schema of the playbook format",
        playbooks=False,
    )
    p = add(
        "heal",
        commands["heal"],
        "heal injuries from a file or the stream once and report",
        repo=True,
    )
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
    p.add_argument(
        "--check",
        action="store_true",
        help="a dry-run that also fails (exit 1) when anything would be healed (pre-commit)",
    )
    p = add("run", commands["run"], "run the cluster agent on the NATS bloodstream", repo=True)
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
    p.add_argument(
        "--console",
        action="store_true",
        help="also serve the operator console on the metrics port: /ui and /api (env CONSOLE; "
        "writes need CONSOLE_TOKEN or CONSOLE_TOKEN_FILE, else read-only)",
    )
    p = add(
        "publish",
        commands["publish"],
        "publish injuries to aura.hive.injury (like bee-keeper)",
        playbooks=False,
    )
    p.add_argument("injuries", metavar="INJURIES", help="JSON, JSON Lines, or '-' for stdin")
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
    add_client_flags(p)
    p = add("tail", commands["tail"], "print bloodstream messages, pretty-printed", playbooks=False)
    p.add_argument("subject", nargs="?", default="aura.hive.>", help="default aura.hive.>")
    add_client_flags(p)
    p.add_argument("--raw", action="store_true", help="one canonical JSON line per message")
    p.add_argument("--count", type=int, help="stop after this many messages")
    add("demo", commands["demo"], "heal a temporary repository end to end, to see it work")
    p = add(
        "setup-nats",
        commands["setup-nats"],
        "create the agent's streams, consumer and KV buckets, replicated (as an admin user)",
        playbooks=False,
    )
    add_client_flags(p)
    p.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 6),
        metavar="N",
        help="replicas of each asset (env NATS_REPLICAS; default: the cluster's size, at most 3)",
    )
    add_control_commands(add, commands)
    return parser


def add_control_commands(
    add: Callable[..., argparse.ArgumentParser], commands: Mapping[str, Command]
) -> None:
    """The operator controls (see `control_cli`)."""
    for name, help_ in (
        ("pause", "pause every replica's heals, fleet-wide (or one playbook's)"),
        ("resume", "lift a pause: what waited heals"),
    ):
        p = add(name, commands[name], help_, playbooks=False)
        p.add_argument("--playbook", metavar="NAME", help="only this playbook")
        if name == "pause":
            p.add_argument("--reason", metavar="TEXT", help="why (shown in heartbeats and pages)")
        p.add_argument("--by", metavar="NAME", help="who (default: your user name)")
        add_client_flags(p)
    p = add(
        "reset-breaker",
        commands["reset-breaker"],
        "close a repository's blast-radius breaker: its held injuries heal",
        playbooks=False,
    )
    p.add_argument(
        "repo", metavar="REPO", help="the repository as the agent names it (its remote URL)"
    )
    p.add_argument(
        "--playbook", metavar="NAME", help="the playbook's own breaker (`breaker:`) instead"
    )
    p.add_argument("--by", metavar="NAME", help="who (default: your user name)")
    add_client_flags(p)
    for name, help_ in (
        ("approve", "approve a heal held for approval: one replica heals it"),
        ("reject", "reject a heal held for approval: it is closed and its page resolved"),
    ):
        p = add(name, commands[name], help_, playbooks=False)
        p.add_argument("injury_id", metavar="INJURY_ID")
        p.add_argument("--by", metavar="NAME", help="who (default: your user name)")
        p.add_argument("--reason", metavar="TEXT", help="why (kept with the decision)")
        add_client_flags(p)
    p = add(
        "dead-letters",
        commands["dead-letters"],
        "list the dead letters, newest first",
        playbooks=False,
    )
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    add_client_flags(p)
    p = add(
        "replay",
        commands["replay"],
        "publish a dead letter again to aura.hive.injury under a new injury id",
        playbooks=False,
    )
    p.add_argument("seq", type=int, metavar="SEQ", help="its sequence (see `dead-letters`)")
    p.add_argument("--by", metavar="NAME", help="who (default: your user name)")
    add_client_flags(p)
    for name, help_ in (
        ("history", "print what the agents did, from the AURA_HEAL_HISTORY stream"),
        ("show", "print one injury's whole story from the history"),
    ):
        p = add(name, commands[name], help_, playbooks=False)
        if name == "show":
            p.add_argument("injury_id", metavar="INJURY_ID")
        else:
            p.add_argument(
                "--kind",
                help="only this outcome: healed, held, escalated, failed, rejected, skipped, "
                "or control (pause, resume, reset-breaker)",
            )
            p.add_argument("--path", metavar="GLOB", help="only injuries whose path matches GLOB")
        p.add_argument(
            "--since",
            default="1h" if name == "history" else "30d",
            metavar="TIME",
            help="ISO-8601 time, Unix epoch, or a duration ago like 15m, 2h, 1d",
        )
        p.add_argument("--format", choices=["text", "json"], default="text")
        add_client_flags(p)
