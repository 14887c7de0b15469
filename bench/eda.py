"""The Event-Driven Ansible peer: ansible-rulebook with 5 rules over a generator source of N events.

ansible-rulebook (and ansible-core, whose `ansible-galaxy` it requires) live in their own venv,
`bench/eda/.venv` (ignored by git), made on first use; its rule engine needs a Java 17+
runtime from the OS (`apt-get install -y openjdk-17-jre-headless`). When either cannot be had,
`peer()` says why and the line is skipped: a figure is never made up.

The rate is N over the time between the rule fired by the first event and the rule fired by the
final one, as ansible-rulebook stamps them (its start-up is not counted).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from bench.common import ROOT

VENV = ROOT / "bench" / "eda" / ".venv"
PACKAGES = ("ansible-rulebook==1.3.2", "ansible-core")
RULEBOOK = """\
- name: auto-healer peer
  hosts: all
  sources:
    - eda.builtin.generic:
        payload:
          - injury:
              timestamp: 1735920000.0
              injury_type: unauthorized_directory
              affected_path: core/src/stray/
              severity: high
              recommended_action: delete_directory
              auto_heal: true
        loop_count: {n}
        create_index: i
        final_payload:
          shutdown: true
  rules:
    - name: first
      condition: event.i == 0
      action:
        debug:
          msg: bench-first
    - name: heal
      condition: event.injury.injury_type == "unauthorized_directory" and event.injury.auto_heal
      action:
        none:
    - name: format
      condition: event.injury.injury_type == "format_violation"
      action:
        none:
    - name: escalate
      condition: event.injury.severity == "critical"
      action:
        none:
    - name: done
      condition: event.shutdown is defined
      action:
        shutdown:
          delay: 0
"""
_STAMP = re.compile(r"^\*\* (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \[(\w+)\]", re.MULTILINE)


def peer() -> tuple[Path | None, str]:
    """The `ansible-rulebook` to run, installing it on first use; or None and why not."""
    java = shutil.which("java")
    if java is None:
        return None, "no Java runtime (apt-get install -y openjdk-17-jre-headless)"
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    major = re.search(r'version "(\d+)', version)
    if major is None or int(major.group(1)) < 17:
        return None, f"Java 17+ needed, found: {version.splitlines()[0] if version else '?'}"
    exe = VENV / "bin" / "ansible-rulebook"
    if not exe.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", *PACKAGES]
            subprocess.run(pip, check=True, capture_output=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"cannot install {', '.join(PACKAGES)}: {exc}"
    return exe, ""


def rate(exe: Path, n: int, tmp: Path) -> float:
    """Events per second ansible-rulebook took through its 5 rules, first rule to last."""
    rulebook = tmp / "rulebook.yml"
    rulebook.write_text(RULEBOOK.format(n=n))
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(exe), "-r", str(rulebook), "-i", os.devnull],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    stamps = {kind: when for when, kind in _STAMP.findall(proc.stdout)}
    if proc.returncode != 0 or "debug" not in stamps or "ruleset" not in stamps:
        raise RuntimeError(f"ansible-rulebook failed ({proc.returncode}): {proc.stderr[-2000:]}")
    first = datetime.fromisoformat(stamps["debug"])
    last = datetime.fromisoformat(stamps["ruleset"])
    return n / max((last - first).total_seconds(), 1e-6)
