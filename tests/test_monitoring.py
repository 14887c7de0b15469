"""The alert rules and the Grafana dashboard in deploy/helm/auto-healer/files/.

promtool (Debian's `prometheus` package; .ci/run installs it) checks the rules, runs their unit
tests (tests/prometheus/alerts_test.yaml) and parses every dashboard query; without it those
tests skip and say so. Every metric an alert or a panel reads must be served by a real agent's
/metrics, except Prometheus's own `up`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from auto_healer.embedded import NatsServer
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_support import AgentProcess
from tests.test_deploy_config import ROOT

FILES = ROOT / "deploy" / "helm" / "auto-healer" / "files"
RULES = FILES / "alerts.rules.yaml"
DASHBOARD = FILES / "dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)
FROM_PROMETHEUS = {"up"}
NOT_YET_SERVED: set[str] = set()  # a metric an alert expects before the agent serves it
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": "auto-healer",
                     "$instance": ".*"}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}  # fmt: skip


def promtool(*args: str, cwd: Path = ROOT) -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr


def alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def panel_exprs() -> dict[str, str]:
    exprs = {}
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            exprs[f"{panel['title']} {target['refId']}"] = expr
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, matchers and groupings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    functions = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", expr))
    names = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names - functions if n.lower() not in KEYWORDS}


def test_metric_names_reads_names_not_functions_or_labels() -> None:
    """The extractor finds the metrics of a query, not its functions, labels or keywords."""
    expr = ('sum by (topic) (rate(a_total{topic="x.y", job=~"$job"}[5m])) > 0 '
            "unless on (instance) histogram_quantile(0.9, b_bucket) and up == 1")  # fmt: skip
    assert metric_names(expr) == {"a_total", "b_bucket", "up"}


@needs_promtool
def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    """`promtool check rules` passes, and every alert fires (or not) as its unit tests say."""
    promtool("check", "rules", str(RULES))
    promtool("test", "rules", "alerts_test.yaml", cwd=ROOT / "tests" / "prometheus")
    tested = set(re.findall(r"alertname: (\w+)", (ROOT / "tests/prometheus/alerts_test.yaml")
                            .read_text()))  # fmt: skip
    assert tested == set(alert_exprs()), "each alert needs a promtool unit test"


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel's query parses (promtool checks each one as a recording rule)."""
    rules = [{"record": f"dashboard:query_{i}", "expr": e}
             for i, e in enumerate(panel_exprs().values())]  # fmt: skip
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


def test_dashboard_is_well_formed() -> None:
    """Unique uid and panel ids, panels inside the 24-column grid, each with a query."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "auto-healer" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def served_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
    return names


def test_alerts_and_panels_read_only_metrics_the_agent_serves(
    tmp_path: Path, repo: tuple[Path, Path], nats_server: NatsServer
) -> None:
    """Each metric in an alert or a panel is on a real agent's /metrics (bar `up`)."""
    remote, _work = repo
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote).wait_ready()
    try:
        status, text = agent.get("/metrics")
        assert status == 200
    finally:
        agent.kill()
    served = served_names(text)
    used = {
        name: where
        for where, expr in {**alert_exprs(), **panel_exprs()}.items()
        for name in metric_names(expr)
    }
    missing = {n: w for n, w in used.items() if n not in served | FROM_PROMETHEUS | NOT_YET_SERVED}
    assert missing == {}
    assert set(used) >= NOT_YET_SERVED
    assert not NOT_YET_SERVED & served, "a metric is served now: drop it from NOT_YET_SERVED"
