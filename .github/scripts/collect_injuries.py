"""Collect the injuries a GitHub Actions run of auto-heal must handle, into one JSON file.

Sources, by event (all read from the environment, never interpolated into a shell):
  workflow_dispatch    INPUT_INJURIES: JSON (one injury or a list)
  repository_dispatch  CLIENT_INJURIES: toJSON(github.event.client_payload.injuries)
  workflow_run         the artifact AUDIT_ARTIFACT of the bee-keeper audit run RUN_ID; when
                       the run has none and STREAM_FALLBACK is `true`, the injury stream
  pull_request         the same artifact, from the latest successful audit of HEAD_SHA

Writes `$RUNNER_TEMP/auto-heal/injuries.json` (a JSON list) and the step outputs `source=file`,
`file`, `count` and `note`; count 0 means there is nothing to heal (`note` and the step summary
say why). When the injuries are to be read from the stream (`auto-healer heal --from-stream`;
the real bee.Keeper uploads no artifact), the outputs are `source=stream` and `note` only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def gh(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["gh", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # a self-hosted runner without the GitHub CLI
        return subprocess.CompletedProcess(["gh", *args], 127, "", "gh: not installed")


def parse(text: str) -> list[Any]:
    """Injuries from JSON (object, list, or a JSON string of either) or JSON Lines."""
    text = text.strip()
    if not text or text == "null":
        return []
    try:
        value = json.loads(text)
        if isinstance(value, str):
            return parse(value)
        return value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def latest_audit_run(sha: str) -> str:
    """The id of the latest successful audit run of a commit, or '' if there is none yet."""
    where = ["--repo", env("GITHUB_REPOSITORY"), "--workflow", env("AUDIT_WORKFLOW")]
    which = ["--commit", sha, "--status", "success", "--limit", "1"]
    result = gh("run", "list", *where, *which, "--json", "databaseId", "--jq", ".[0].databaseId")
    run_id = result.stdout.strip() if result.returncode == 0 else ""
    return "" if run_id == "null" else run_id


def from_artifact(run_id: str) -> tuple[str, str]:
    """The injuries text of the audit artifact of a run, and a note when there is none."""
    if not run_id:
        return "", f"no successful '{env('AUDIT_WORKFLOW')}' run for {env('HEAD_SHA')} yet"
    with tempfile.TemporaryDirectory() as tmp:
        name = ["--name", env("AUDIT_ARTIFACT"), "--dir", tmp]
        result = gh("run", "download", run_id, "--repo", env("GITHUB_REPOSITORY"), *name)
        if result.returncode != 0:
            return "", f"run {run_id} has no artifact '{env('AUDIT_ARTIFACT')}': nothing to heal"
        # Only the injuries: other JSON files an audit may upload (a summary) are not injuries.
        files = sorted(
            p for p in Path(tmp).rglob("*") if p.name == "injuries.json" or p.suffix == ".jsonl"
        )
        injuries = [i for p in files for i in parse(p.read_text(encoding="utf-8"))]
        return json.dumps(injuries), ""


def from_stream(why: str) -> int:
    """No artifact: tell the heal step to read the injury stream instead."""
    note = f"{why}; reading the injuries from the stream (auto-healer heal --from-stream)"
    with open(env("GITHUB_OUTPUT", os.devnull), "a", encoding="utf-8") as fh:
        fh.write(f"source=stream\nnote={note}\n")
    with open(env("GITHUB_STEP_SUMMARY", os.devnull), "a", encoding="utf-8") as fh:
        fh.write(f"### auto-heal\n\n{note}\n")
    print(note)
    return 0


def main() -> int:
    event = env("EVENT_NAME")
    note = ""
    if event == "workflow_dispatch":
        text = env("INPUT_INJURIES")
    elif event == "repository_dispatch":
        text = env("CLIENT_INJURIES")
    elif event == "workflow_run":
        text, note = from_artifact(env("RUN_ID"))
        if note and env("STREAM_FALLBACK") == "true":
            return from_stream(note)
    elif event == "pull_request":
        text, note = from_artifact(latest_audit_run(env("HEAD_SHA")))
    else:
        print(f"collect_injuries: unsupported event {event!r}", file=sys.stderr)
        return 2
    try:
        injuries = parse(text)
    except json.JSONDecodeError as exc:
        print(f"collect_injuries: the injuries are not JSON: {exc}", file=sys.stderr)
        return 2
    out = Path(env("RUNNER_TEMP", tempfile.gettempdir())) / "auto-heal" / "injuries.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(injuries, indent=2), encoding="utf-8")
    if not injuries:
        note = note or "no injuries: nothing to heal"
    with open(env("GITHUB_OUTPUT", os.devnull), "a", encoding="utf-8") as fh:
        fh.write(f"source=file\nfile={out}\ncount={len(injuries)}\nnote={note}\n")
    if note:
        with open(env("GITHUB_STEP_SUMMARY", os.devnull), "a", encoding="utf-8") as fh:
            fh.write(f"### auto-heal\n\n{note}\n")
        print(note)
    print(f"{len(injuries)} injuries from {event} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
