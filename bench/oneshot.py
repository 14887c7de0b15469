"""One-shot: `auto-healer heal` of one injury, against the git CLI floor on the same repository.

Each run heals a fresh copy of the demo repository (copying is not timed): the whole
`auto-healer heal` process, start-up included, against `git rm -r` + `git commit` + `git push`
of the same directory on another fresh copy. The runs alternate (A B A B ...) and the ratio is
taken pair by pair, so a drift of the machine's speed moves both sides. The start-up alone
(`auto-healer heal --help`) is reported beside it, and so is a bare Python importing only the
libraries a heal cannot do without: what no change to auto-healer's own code can go below.

The tool is timed as installed: a wheel's install writes bytecode (and so does `make`'s
`bytecode` step), so an editable install from a source tree is compiled first, as there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import auto_healer
from auto_healer.demo import SEED, make_repo

from bench.common import ROOT, Context, Line, copy_repo, fmt_spread, git, git_env, spread, timed

TARGET_RATIO = 5.0
STUFF = "core/src/random_stuff"
# The libraries a heal needs (settings, GitPython, logs, playbooks, retries, JSON), in a bare
# Python; rich is kept out as `auto-healer` keeps it out of a heal whose stderr is a pipe.
LIBRARIES = (
    "import sys; sys.modules['rich'] = None; "
    "import pydantic_settings, git, structlog, yaml, tenacity, orjson"
)


def _command() -> list[str]:
    """The installed `auto-healer` script beside this Python, else `python -m auto_healer`."""
    script = Path(sys.executable).parent / "auto-healer"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "auto_healer"]


def _as_installed() -> str:
    """Compile a source tree's package as installing a wheel would; say what was timed."""
    package = Path(auto_healer.__file__).resolve().parent
    if not package.is_relative_to(ROOT):
        return "installed package"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    return "editable install, bytecode compiled as a wheel's install does"


def run(ctx: Context) -> list[Line]:
    installed = _as_installed()
    tmpl = ctx.tmp / "oneshot-template"
    tmpl.mkdir()
    make_repo(tmpl, SEED)
    injury = ctx.tmp / "oneshot-injury.json"
    injury.write_text(
        json.dumps(
            {
                "timestamp": 1735920000.0,
                "injury_type": "unauthorized_directory",
                "affected_path": f"{STUFF}/",
                "severity": "high",
                "recommended_action": "delete_directory",
                "auto_heal": True,
            }
        )
    )
    env = {**git_env(), "XDG_STATE_HOME": str(ctx.tmp / "oneshot-state"), "LOG_FORMAT": "json"}
    for var in ("PAGER_WEBHOOK_URL", "NATS_URL", "DRY_RUN", "REPO_PATH", "REPO_URL"):
        env.pop(var, None)
    heal = [*_command(), "heal", str(injury), "--playbooks", str(ROOT / "playbooks")]
    runs = max(ctx.runs, 3)
    ours, floors, starts, libs = [], [], [], []
    for i in range(runs):
        remote, work = copy_repo(tmpl, ctx.tmp / f"oneshot-a{i}")
        ours.append(timed([*heal, "--repo", str(work), "--format", "json"], cwd=ctx.tmp, env=env))
        if any(f.startswith(STUFF) for f in git(remote, "ls-tree", "-r", "--name-only", "main")):
            raise RuntimeError("auto-healer heal left the directory on the remote")
        _remote, work = copy_repo(tmpl, ctx.tmp / f"oneshot-b{i}")
        floors.append(
            timed(["git", "rm", "-r", "-q", "--", STUFF], cwd=work, env=env)
            + timed(["git", "commit", "-q", "-m", f"remove {STUFF}"], cwd=work, env=env)
            + timed(["git", "push", "-q", "origin", "main"], cwd=work, env=env)
        )
        starts.append(timed([*_command(), "heal", "--help"], cwd=ctx.tmp, env=env))
        libs.append(timed([sys.executable, "-c", LIBRARIES], cwd=ctx.tmp, env=env))
        for side in "ab":
            shutil.rmtree(ctx.tmp / f"oneshot-{side}{i}")
        print(
            f"one-shot {i + 1}/{runs}: auto-healer heal {ours[-1]:.3f} s, git CLI "
            f"{floors[-1]:.3f} s, heal --help {starts[-1]:.3f} s, libraries {libs[-1]:.3f} s",
            flush=True,
        )
    ratios = [a / b for a, b in zip(ours, floors, strict=True)]
    values = {
        "auto_healer_heal_seconds": spread(ours),
        "git_cli_seconds": spread(floors),
        "ratio": spread(ratios),
        "heal_help_seconds": spread(starts),
        "library_imports_seconds": spread(libs),
        "library_imports_ratio": spread([a / b for a, b in zip(libs, floors, strict=True)]),
    }
    return [
        Line(
            "oneshot_ratio",
            "one-shot: `auto-healer heal` of one injury ÷ git rm -r + commit + push",
            f"{spread(ratios)['median']:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})",
            f"≤ {TARGET_RATIO:g}x",
            spread(ratios)["median"] <= TARGET_RATIO,
            values,
            f"auto-healer heal {fmt_spread(ours)}; git CLI {fmt_spread(floors)}; "
            f"start-up alone (heal --help) {fmt_spread(starts)}; the libraries' imports alone "
            f"{fmt_spread(libs)} ({values['library_imports_ratio']['median']:.1f}x the floor); "
            f"{installed}",
        )
    ]
