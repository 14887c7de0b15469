"""Print the ConfigMap `auto-healer-playbooks` holding every playbooks/*.yaml, byte for byte.

    python3 deploy/k8s/playbooks_configmap.py > deploy/k8s/playbooks-configmap.yaml

Standard library only; a test fails while the committed file differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HEADER = """\
# The shipped playbooks, mounted at /etc/auto-healer/playbooks (replaces the baked-in ones).
# Generated from playbooks/ by deploy/k8s/playbooks_configmap.py; do not edit by hand.
apiVersion: v1
kind: ConfigMap
metadata:
  name: auto-healer-playbooks
  labels:
    app.kubernetes.io/name: auto-healer
data:
"""


def render(playbooks: Path = ROOT / "playbooks") -> str:
    """The ConfigMap YAML: one literal block per playbook file."""
    out = [HEADER.rstrip("\n")]
    for path in sorted(playbooks.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n") or text.endswith("\n\n") or text[:1] in " \t":
            raise SystemExit(f"{path}: needs exactly one final newline and no leading blank")
        out.append(f"  {path.name}: |")
        out += [f"    {line}" if line else "" for line in text.splitlines()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
