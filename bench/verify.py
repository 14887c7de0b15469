"""What verifying after a heal costs: N heals one at a time on a local bare remote, each timed
whole and in its verification, then the same heals with verification left out.

    python -m bench.verify [--heals 20]

Prints min / median / max per heal (ms) for deletions and formats, with and without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import structlog
from auto_healer.checkout import Checkout
from auto_healer.contracts import parse_injury
from auto_healer.demo import make_repo
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import Playbook, load_playbooks
from auto_healer.verification import HealVerifier

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
MESSY = "def  f( a,b ):\n  return a+b\n"


class Timed(HealVerifier):
    """The real verifier, timed; or none at all (`off`)."""

    def __init__(self, checkout: Checkout, *, off: bool) -> None:
        super().__init__(checkout)
        self.off, self.took_s = off, 0.0

    async def check(self, playbook: Playbook, outcome: Outcome) -> Outcome:
        if self.off:
            return outcome
        started = time.perf_counter()
        try:
            return await super().check(playbook, outcome)
        finally:
            self.took_s += time.perf_counter() - started


async def heals(root: Path, kind: str, n: int, *, off: bool) -> tuple[list[float], list[float]]:
    """Per heal: the whole heal's seconds and its verification's."""
    if kind == "delete":
        files = {f"core/src/d{i}/x.py": "x = 1\n" for i in range(n)}
        payloads = [
            ("unauthorized_directory", "delete_directory", f"core/src/d{i}/") for i in range(n)
        ]
    else:
        files = {f"core/src/m{i}.py": MESSY for i in range(n)}
        payloads = [("unformatted_code", "format_code", f"core/src/m{i}.py") for i in range(n)]
    _remote, work = make_repo(root, {"pyproject.toml": "[project]\nname='x'\n", **files})
    healer = Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False, max_batch=1)
    verifier = healer._verifier = Timed(healer.checkout, off=off)
    total, checking = [], []
    for injury_type, action, path in payloads:
        payload = {"timestamp": 1.0, "injury_type": injury_type, "affected_path": path,
                   "severity": "low", "recommended_action": action, "auto_heal": True}  # fmt: skip
        verifier.took_s = 0.0
        started = time.perf_counter()
        outcome = await healer.handle(parse_injury(json.dumps(payload).encode()))
        total.append(time.perf_counter() - started)
        checking.append(verifier.took_s)
        assert outcome.kind is Kind.HEALED, outcome.reason
        assert outcome.verified is (None if off else True)
    healer.checkout.close()
    return total, checking


def _ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{min(ms):7.1f} {statistics.median(ms):7.1f} {max(ms):7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heals", type=int, default=20)
    n = parser.parse_args().heals
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"{n} heals each, one at a time; ms per heal: min median max")
    for kind in ("delete", "format"):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            off, _ = asyncio.run(heals(Path(b), kind, n, off=True))
            on, checking = asyncio.run(heals(Path(a), kind, n, off=False))
        print(f"{kind:<7} heal, verified      {_ms(on)}")
        print(f"{kind:<7}   of which verifying {_ms(checking)}")
        print(f"{kind:<7} heal, not verified  {_ms(off)}")


if __name__ == "__main__":
    main()
