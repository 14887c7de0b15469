"""`make bench`: every benchmark line, each beside its baseline in the same run, as ratios.

    python -m bench.run [--only burst,oneshot,intake,memory] [--runs 3] [--publish]

Lines (see `LINES`; add one by registering a `(Context) -> list[Line]` function):

  burst    N distinct injuries on one repository through the agent (real mode) vs one git CLI
           commit of the same deletions: commits, and the time ratio
  oneshot  `auto-healer heal` of one injury vs git rm + commit + push on the same repository
  intake   the agent's dry-run throughput vs raw nats-py consumers; its memory
  memory   that memory alone, not in the default run (`intake` measures it too)

`BENCH_QUICK=1` runs smaller, once each. Results go to `bench/results/last-run.{json,md}`
(not tracked); `--publish` (`make bench-publish`) also writes the checked-in
`bench/results/latest.{json,md}` and the table quoted in docs/benchmarks.md. Speed is never
asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from auto_healer.embedded import NatsServer

from bench import burst, intake, oneshot
from bench.common import ROOT, Context, Line

RESULTS = ROOT / "bench" / "results"
LINES: dict[str, Callable[[Context], list[Line]]] = {
    "burst": burst.run,
    "oneshot": oneshot.run,
    "intake": intake.run,
    "memory": intake.run_memory,
}
DEFAULT = ["burst", "oneshot", "intake"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        help=f"comma-separated lines of {','.join(LINES)} (default: {','.join(DEFAULT)})",
    )
    parser.add_argument("--runs", type=int, help="runs of each measured figure (default 3)")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also refresh the checked-in results and docs/benchmarks.md",
    )
    args = parser.parse_args()
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    chosen = args.only.split(",") if args.only else DEFAULT
    unknown = [name for name in chosen if name not in LINES]
    if unknown:
        parser.error(f"unknown line(s) {', '.join(unknown)}; known: {', '.join(LINES)}")
    runs = args.runs or (1 if quick else 3)
    started = time.monotonic()
    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="auto-healer-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with NatsServer(tmp / "nats") as server:
            for name in chosen:
                ctx = Context(tmp=tmp / name, nats_url=server.url, runs=runs, quick=quick)
                ctx.tmp.mkdir()
                lines += LINES[name](ctx)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "quick": quick,
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
        "lines": [line.as_dict() for line in lines],
    }
    md = table(doc, lines)
    write(RESULTS / "last-run", doc, md)
    if args.publish:
        write(RESULTS / "latest", doc, md)
        quote_in_readme(md)
    print(md)


def table(doc: dict[str, object], lines: list[Line]) -> str:
    """The Markdown table of a run: each figure beside its target."""
    runs = f"median of {doc['runs']} runs (min, max)" if doc["runs"] != 1 else "one run"
    quick = ", BENCH_QUICK" if doc["quick"] else ""
    out = [
        f"Benchmark of {doc['when']} on {doc['machine']}; {runs}{quick}:",
        "",
        "| measure | figure | target | met |",
        "|---|---|---|---|",
    ]
    for line in lines:
        met = "—" if line.met is None else ("yes" if line.met else "**no**")
        out.append(f"| {line.measure} | {line.figure} | {line.target or '—'} | {met} |")
    notes = [f"- {line.measure}: {line.note}" for line in lines if line.note]
    return "\n".join(out + (["", *notes] if notes else []))


def write(stem: Path, doc: dict[str, object], md: str) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(md + "\n")


def quote_in_readme(table_md: str) -> None:
    """Replace the results quoted in docs/benchmarks.md (between its markers) with this run's."""
    readme = ROOT / "docs" / "benchmarks.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(f"{head}{start}\n{table_md}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    main()
