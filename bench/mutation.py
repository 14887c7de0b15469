"""Mutation testing of the decision and the contract parser: `make mutation`.

mutmut 3 imports mutants only from `./`, `src/` or `source/` and names them after their file
path, while this package lives in `agents/` and is imported as `auto_healer`. So the run is
staged in `build/mutation/` (ignored by git): `src` and `tests` there are links to `agents/`
and `tests/`, and a generated `setup.cfg` holds the `[mutmut]` configuration. mutmut copies
everything it changes into `build/mutation/mutants/`; no tracked file is written.

    python -m bench.mutation --tests tests/test_contracts.py -- agents/auto_healer/outcomes.py

prints, per module, killed / survived / total and every survivor with its diff.
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "mutation"
LOG = STAGE / "mutmut.log"


def stage(targets: list[str], tests: list[str]) -> None:
    """A fresh src-layout view of the repository with the mutmut configuration for this run."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    (STAGE / "src").symlink_to(ROOT / "agents", target_is_directory=True)
    (STAGE / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    cfg = configparser.ConfigParser()
    cfg["mutmut"] = {
        "source_paths": "src/auto_healer",
        "only_mutate": "\n" + "\n".join("src/" + t.removeprefix("agents/") for t in targets),
        "pytest_add_cli_args_test_selection": "\n" + "\n".join(tests),
        # The cache would be written inside mutants/ anyway; without it runs don't interfere.
        "pytest_add_cli_args": "\n-p\nno:cacheprovider",
    }
    with (STAGE / "setup.cfg").open("w") as f:
        cfg.write(f)


def mutmut(*args: str, log: Path | None = None) -> str:
    """Run one mutmut command in the staging directory and return its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=STAGE,
        capture_output=True,
        text=True,
        check=False,
    )
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"mutmut {args[0]} failed with exit {proc.returncode} (log: {LOG})")
    return proc.stdout


def module_of(mutant: str) -> str:
    """`auto_healer.outcomes.x_consequence__mutmut_3` -> `auto_healer.outcomes`."""
    return re.split(r"\.x[_\u01c1]", mutant, maxsplit=1)[0]  # x_f, or x U+01C1 for methods


def diff_lines(mutant: str) -> list[str]:
    """The changed lines of one mutant, as `mutmut show` prints them."""
    lines = mutmut("show", mutant).splitlines()
    return [
        line
        for line in lines
        if line[:1] in "-+" and not line.startswith(("---", "+++")) and line[1:].strip()
    ]


def report(skip: list[str]) -> int:
    """Print the score of each module and every survivor; return the number of survivors."""
    statuses: dict[str, str] = {}
    skipped = 0
    for line in mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep:
            continue
        if any(fnmatch.fnmatch(name, pattern) for pattern in skip):
            skipped += 1
        else:
            statuses[name] = status
    if not statuses:
        raise SystemExit("mutmut reported no mutants: is the MUTATE list right?")
    survivors = sorted(n for n, s in statuses.items() if s != "killed")
    print("\nmutation score (killed / survived / total):")
    for module in sorted({module_of(n) for n in statuses}):
        counts = Counter(s for n, s in statuses.items() if module_of(n) == module)
        total = sum(counts.values())
        print(f"  {module}: {counts['killed']} / {total - counts['killed']} / {total}", end="")
        others = {s: c for s, c in counts.items() if s not in ("killed", "survived")}
        print(f"  (not killed: {others})" if others else "")
    if skipped:
        print(f"  ({skipped} mutants matching {' '.join(skip)} not counted)")
    print(f"\n{len(survivors)} surviving mutants:")
    for name in survivors:
        print(f"  {name} [{statuses[name]}]")
        for line in diff_lines(name):
            print(f"      {line.strip()[:110]}")
    return len(survivors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="modules under agents/ to mutate")
    parser.add_argument("--tests", nargs="+", required=True, help="fast test files to run")
    parser.add_argument("--skip", nargs="*", default=[], help="mutant name globs not to count")
    parser.add_argument("--max-children", default="2", help="parallel mutant workers")
    args = parser.parse_args()
    for path in [*args.targets, *args.tests]:
        if not (ROOT / path).is_file():
            raise SystemExit(f"{path}: no such file")
    if not all(t.startswith("agents/") for t in args.targets):
        raise SystemExit("targets must be modules under agents/")
    stage(args.targets, args.tests)
    print(f"mutmut run over {' '.join(args.targets)} (log: {LOG})", flush=True)
    mutmut("run", "--max-children", args.max_children, log=LOG)
    report(args.skip)


if __name__ == "__main__":
    main()
