"""The layout's one rule that code can check: only the transports know NATS."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "agents" / "auto_healer"
# the transports: connection and publishing, the JetStream assets (split from bloodstream for
# size), the KV coordination, the pages shared across the fleet (coordination of pages), and
# the KV cells of the operator controls, the KV path locks of a batch (split from coordination),
# and the coordination buckets' per-injury calls
ALLOWED = {
    "bloodstream.py",
    "assets.py",
    "coordination.py",
    "fleet.py",
    "kvcell.py",
    "kvstore.py",
    "kvwire.py",
    "ownlocks.py",
    "pathlocks.py",
}


def test_only_sources_bloodstream_and_coordination_import_nats() -> None:
    """No module outside sources/ and the listed NATS adapters imports nats."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "sources" or rel.name in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{rel}: {n}" for n in names if n == "nats" or n.startswith("nats.")]
    assert offenders == []
