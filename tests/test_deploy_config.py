"""Deployment files: compose, Kubernetes, GitHub workflows, the composite action, the Dockerfile.

Schemas are the ones bundled with check-jsonschema (compose-spec, github-workflows,
github-actions) and kubernetes-validate (Kubernetes 1.30, strict): no network is used, and the
subprocesses get an unreachable proxy to prove it. Scripts from the workflow and the action run
for real on the `repo` fixture.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import runpy
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from auto_healer.settings import Settings

from tests.conftest import git, injury, tree_digest, write_injuries

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
WORKFLOWS = ROOT / ".github" / "workflows"
ACTION = ROOT / "actions" / "auto-heal" / "action.yml"
BIN = Path(sys.executable).parent
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
K8S_VERSION = "1.30.0"
# env the agent reads besides its Settings fields (git, paths, and the env-only aliases)
OTHER_ENV = {"XDG_STATE_HOME", "HOME", "HEARTBEAT_INTERVAL_SEC", "GIT_CONFIG_COUNT",
             "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0"}  # fmt: skip


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The `on:` block (YAML 1.1 reads the bare key `on` as True)."""
    on = workflow.get("on", workflow.get(True))
    return {k: {} for k in on} if isinstance(on, list) else on


def check_jsonschema(schema: str, *files: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
        capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def known_env() -> set[str]:
    return {name.upper() for name in Settings.model_fields} | OTHER_ENV


# --- compose ---------------------------------------------------------------------------------


def test_compose_matches_compose_spec() -> None:
    """compose.yml is valid against the compose-spec schema bundled with check-jsonschema."""
    check_jsonschema("vendor.compose-spec", ROOT / "compose.yml")


def test_compose_runs_nats_and_two_healers() -> None:
    """NATS with JetStream, 8222 and the ACLs; two healers in the queue group, configured by env."""
    services = load(ROOT / "compose.yml")["services"]
    nats, healer = services["nats"], services["auto-healer"]
    assert {"127.0.0.1:4222:4222", "127.0.0.1:8222:8222"} <= set(nats["ports"])
    assert "./deploy/nats/nats-server.conf:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    assert "js-enabled-only" in " ".join(nats["healthcheck"]["test"])
    assert healer["deploy"]["replicas"] == 2
    env = healer["environment"]
    assert env["QUEUE_GROUP"] == "auto-healer"
    assert env["JETSTREAM"] == "true"
    assert env["NATS_USER"] == "auto-healer"
    assert env["METRICS_PORT"] == "9464"
    assert set(env) <= known_env(), set(env) - known_env()
    assert "/healthz" in " ".join(healer["healthcheck"]["test"])
    assert healer["depends_on"]["nats"]["condition"] == "service_healthy"
    assert healer["read_only"] is True
    assert any(":/etc/auto-healer/playbooks:ro" in str(v) for v in healer["volumes"])


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_and_conventional() -> None:
    """python:3.11-slim, git, playbooks baked in, non-root USER last, python healthcheck."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "COPY playbooks /etc/auto-healer/playbooks" in lines
    assert "PLAYBOOKS_DIR=/etc/auto-healer/playbooks" in text
    assert re.search(r"apt-get install .*\bgit\b", text)
    assert 'ENTRYPOINT ["auto-healer"]' in lines
    assert 'CMD ["run", "--jetstream"]' in lines
    healthcheck = next(ln for ln in lines if ln.startswith('CMD ["python"'))
    assert "/healthz" in healthcheck
    assert not re.search(r"(curl|wget)[^\n|]*\|\s*(ba)?sh", text), "no curl | sh"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored[ignored.index("*") :][:1] == ["*"]
    assert {"!agents/", "!playbooks/", "!pyproject.toml", "!README.md"} <= set(ignored)


def dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])", text)
    assert match, "no HEALTHCHECK CMD"
    return list(json.loads(match.group(1)))


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[int]]]:
    """A loopback HTTP server answering /healthz with the status at the head of a list."""
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], status
    server.shutdown()
    server.server_close()


def test_healthchecks_probe_healthz(health_server: tuple[int, list[int]]) -> None:
    """The image's and compose's healthchecks pass on 200 from /healthz and fail otherwise."""
    port, status = health_server
    compose_test = load(ROOT / "compose.yml")["services"]["auto-healer"]["healthcheck"]["test"]
    compose_argv = [a.replace(":9464/", f":{port}/") for a in compose_test[1:]]
    for argv in (dockerfile_healthcheck(), compose_argv):  # the image reads METRICS_PORT
        argv = [sys.executable if a == "python" else a for a in argv]
        env = {**os.environ, "METRICS_PORT": str(port)}
        status[0] = 200
        assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
        status[0] = 503
        assert subprocess.run(argv, env=env, capture_output=True).returncode != 0


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_k8s_manifests_validate_strictly() -> None:
    """Every manifest validates (strict: no unknown fields) against Kubernetes 1.30 schemas."""
    docs = k8s_documents()
    assert {d["kind"] for _, d in docs} >= {"Deployment", "ConfigMap", "PodDisruptionBudget"}
    for _, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises if invalid
    listed = load(K8S / "kustomization.yaml")["resources"]
    assert sorted(listed) == sorted({name for name, _ in docs})


def test_k8s_deployment_is_hardened_and_probed() -> None:
    """2 replicas, probes on /healthz and /readyz, resources, non-root, read-only root fs."""
    deploy = next(d for _, d in k8s_documents() if d["kind"] == "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert deploy["spec"]["replicas"] == 2
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/auto-healer", "/tmp"}
    for mount in container["volumeMounts"]:
        if not mount.get("readOnly"):
            assert "emptyDir" in volumes[mount["name"]]
    assert volumes["playbooks"]["configMap"]["name"] == "auto-healer-playbooks"
    secret_keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    assert {"nats-password", "pager-routing-key"} <= secret_keys
    assert volumes["git-credentials"]["secret"]["items"][0]["key"] == "git-credentials"
    config = next(d for _, d in k8s_documents() if d["metadata"]["name"] == "auto-healer-config")
    names = set(config["data"]) | {e["name"] for e in container["env"]}
    assert names <= known_env(), names - known_env()
    assert config["data"]["XDG_STATE_HOME"] == "/var/lib/auto-healer"


def test_k8s_pod_disruption_budget_keeps_one_healer() -> None:
    """The PDB keeps at least one pod of the Deployment's selector."""
    docs = dict((d["kind"], d) for _, d in k8s_documents())
    pdb, deploy = docs["PodDisruptionBudget"], docs["Deployment"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deploy["spec"]["selector"]


def test_k8s_playbooks_configmap_matches_playbooks_dir() -> None:
    """The playbooks ConfigMap holds exactly playbooks/ and is its generator's output."""
    cm = next(d for _, d in k8s_documents() if d["metadata"]["name"] == "auto-healer-playbooks")
    shipped = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "playbooks").glob("*.yaml")}
    assert cm["data"] == shipped
    render = runpy.run_path(str(K8S / "playbooks_configmap.py"))["render"]
    assert (K8S / "playbooks-configmap.yaml").read_text(encoding="utf-8") == render(), (
        "run: python3 deploy/k8s/playbooks_configmap.py > deploy/k8s/playbooks-configmap.yaml"
    )


def test_playbooks_load_from_a_configmap_style_mount(tmp_path: Path) -> None:
    """The agent loads the ConfigMap's playbooks from kubelet's ..data symlink layout."""
    cm = next(d for _, d in k8s_documents() if d["metadata"]["name"] == "auto-healer-playbooks")
    mount = tmp_path / "playbooks"
    (mount / "..2026_11_24_00_00_00.1").mkdir(parents=True)
    (mount / "..data").symlink_to("..2026_11_24_00_00_00.1")
    for name, text in cm["data"].items():
        (mount / "..data" / name).write_text(text, encoding="utf-8")
        (mount / name).symlink_to(f"..data/{name}")
    result = subprocess.run([str(BIN / "auto-healer"), "validate", "--playbooks", str(mount)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(cm['data'])} playbooks valid" in result.stdout


# --- GitHub Actions --------------------------------------------------------------------------


def test_workflows_and_action_match_their_schemas() -> None:
    """Both workflows and the composite action are valid against the bundled GitHub schemas."""
    check_jsonschema("vendor.github-workflows", *sorted(WORKFLOWS.glob("*.yml")))
    check_jsonschema("vendor.github-actions", ACTION)


def test_ci_runs_the_readme_test_command_on_push_and_pull_request() -> None:
    """ci.yml runs `make test` (the README's command) on push and pull_request."""
    ci = load(WORKFLOWS / "ci.yml")
    assert {"push", "pull_request"} <= set(triggers(ci))
    runs = [s.get("run") for s in ci["jobs"]["test"]["steps"]]
    assert "make test" in runs
    assert "make test" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_auto_heal_triggers() -> None:
    """auto-heal runs after the audit workflow, on both dispatches and on pull requests."""
    on = triggers(load(WORKFLOWS / "auto-heal.yml"))
    assert on["workflow_run"] == {"workflows": ["bee-keeper audit"], "types": ["completed"]}
    assert "injuries" in on["workflow_dispatch"]["inputs"]
    assert on["repository_dispatch"] == {"types": ["injuries"]}
    assert "pull_request" in on


def test_auto_heal_cannot_loop() -> None:
    """The heal job's `if:` and guard step stop on audit failure and on auto-healer commits."""
    wf = load(WORKFLOWS / "auto-heal.yml")
    heal = wf["jobs"]["heal"]
    cond = " ".join(heal["if"].split())
    for guard in (
        "github.event.workflow_run.conclusion == 'success'",
        "github.event.workflow_run.event != 'pull_request'",
        "github.event.workflow_run.head_commit.author.name != 'auto-healer'",
        "!contains(github.event.workflow_run.head_commit.message, 'Healed-By: auto-healer')",
        "github.event.workflow_run.head_repository.full_name == github.repository",
    ):
        assert guard in cond, guard  # fmt: skip
    steps = {s.get("id"): s for s in heal["steps"]}
    assert "steps.guard.outputs.skip == 'false'" in steps["heal"]["if"]
    assert steps["heal"]["uses"] == "./actions/auto-heal"
    assert wf["permissions"] == {}
    review = wf["jobs"]["review"]
    assert review["permissions"]["contents"] == "read"
    assert "workflow_run.event == 'pull_request'" in review["if"]


def run_guard(repo: Path, tmp_path: Path) -> str:
    """Run the heal job's guard step (its real shell) in a checkout; return its output."""
    heal = load(WORKFLOWS / "auto-heal.yml")["jobs"]["heal"]
    script = next(s["run"] for s in heal["steps"] if s.get("id") == "guard")
    out, summary = tmp_path / "guard-output", tmp_path / "guard-summary"
    env = {**os.environ, "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}
    subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=repo, env=env, check=True)
    return out.read_text()


def test_guard_skips_a_head_commit_made_by_auto_healer(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """After a real heal commit the guard says skip; on bee-keeper's commit it does not."""
    _, work = repo
    assert run_guard(work, tmp_path) == "skip=false\n"
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    heal = subprocess.run([str(BIN / "auto-healer"), "heal", str(injuries), "--repo", str(work),
                           "--playbooks", str(ROOT / "playbooks"), "--format", "json"],
                          capture_output=True, text=True)  # fmt: skip
    assert heal.returncode == 0, heal.stderr
    assert "Healed-By: auto-healer" in git(work, "log", "-1", "--format=%B")
    assert run_guard(work, tmp_path) == "skip=false\nskip=true\n"


def test_review_is_a_dry_run_with_one_sticky_comment() -> None:
    """The review plans only, from trusted code, and updates its one marked PR comment."""
    review = load(WORKFLOWS / "auto-heal.yml")["jobs"]["review"]
    steps = review["steps"]
    agent, pr = steps[0], steps[1]
    assert agent["with"]["ref"] == "${{ github.event.repository.default_branch }}"
    assert pr["with"]["path"] == "pr"
    assert pr["with"]["persist-credentials"] is False
    plan = next(s for s in steps if s.get("id") == "plan")
    assert plan["with"]["dry-run"] == "true"
    assert plan["with"]["repo"] == "pr"
    comment = steps[-1]["run"]
    assert "<!-- auto-heal:dry-run -->" in comment
    assert "--method PATCH" in comment
    assert "--method POST" in comment


def test_action_inputs_and_outputs() -> None:
    """The composite action takes injuries/playbooks/dry-run/pager and outputs the counts."""
    action = load(ACTION)
    assert action["runs"]["using"] == "composite"
    assert {"injuries", "playbooks", "dry-run", "pager-webhook-url", "pager-routing-key",
            "pager-format"} <= set(action["inputs"])  # fmt: skip
    assert {"healed", "escalated", "failed"} <= set(action["outputs"])


def action_heal_script() -> str:
    steps = load(ACTION)["runs"]["steps"]
    return str(next(s["run"] for s in steps if s.get("id") == "heal"))


def test_action_heal_step_writes_plan_summary_and_outputs(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The action's real heal script, dry-run: Markdown plan in the summary, counts as outputs."""
    remote, work = repo
    before = (tree_digest(work), tree_digest(remote))
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    runner_temp, output, summary = tmp_path / "runner", tmp_path / "out", tmp_path / "summary"
    env = {
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_ACTION_PATH": str(ACTION.parent), "RUNNER_TEMP": str(runner_temp),
        "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
        "INJURIES": str(injuries), "REPO": str(work), "BRANCH": "", "PLAYBOOKS": "",
        "DRY_RUN": "true", "PAGER_FORMAT": "pagerduty", "PAGER_WEBHOOK_URL": "",
        "PAGER_ROUTING_KEY": "", "GIT_AUTHOR_NAME": "auto-healer",
        "GIT_AUTHOR_EMAIL": "auto-healer@aura.hive", "LOG_FORMAT": "console",
    }  # fmt: skip
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", action_heal_script()],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs["planned"] == "1"
    assert (outputs["healed"], outputs["escalated"], outputs["failed"]) == ("0", "0", "0")
    markdown = summary.read_text()
    assert "dry-run" in markdown
    assert "core/src/random_stuff/" in markdown
    assert Path(outputs["report"]).read_text() == result.stdout
    assert (tree_digest(work), tree_digest(remote)) == before


def test_cli_writes_markdown_summary_and_outputs(repo: tuple[Path, Path], tmp_path: Path) -> None:
    """`auto-healer heal --dry-run` appends the Markdown plan and the counts for GitHub."""
    _, work = repo
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    summary.write_text("earlier step\n")
    injuries = write_injuries(
        tmp_path / "i.json", injury("core/src/random_stuff/"),
        injury("core/src/legacy/", auto_heal=False),
    )  # fmt: skip
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}
    result = subprocess.run(
        [str(BIN / "auto-healer"), "heal", str(injuries), "--repo", str(work), "--dry-run",
         "--playbooks", str(ROOT / "playbooks")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    markdown = summary.read_text()
    assert markdown.startswith("earlier step\n")  # appended, not overwritten
    assert "| outcome | injury | playbook | reason |" in markdown
    assert "core/src/random_stuff/" in markdown
    counts = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert counts == {"healed": "0", "planned": "1", "skipped": "0", "escalated": "1",
                      "failed": "0", "rejected": "0"}  # fmt: skip


# --- the injuries collector of the workflow --------------------------------------------------


@pytest.mark.parametrize(
    ("event", "var", "value", "count"),
    [
        ("workflow_dispatch", "INPUT_INJURIES", json.dumps(injury("a/")), 1),
        ("workflow_dispatch", "INPUT_INJURIES", json.dumps([injury("a/"), injury("b/")]), 2),
        ("repository_dispatch", "CLIENT_INJURIES", json.dumps([injury("a/")]), 1),
        ("repository_dispatch", "CLIENT_INJURIES", json.dumps(json.dumps(injury("a/"))), 1),
        ("repository_dispatch", "CLIENT_INJURIES", "null", 0),
    ],
)
def test_collect_injuries_from_dispatch_payloads(
    tmp_path: Path, event: str, var: str, value: str, count: int
) -> None:
    """The workflow's collector turns dispatch payloads into an injuries file and a count."""
    output, summary = tmp_path / "out", tmp_path / "summary"
    env = {**os.environ, "EVENT_NAME": event, var: value, "RUNNER_TEMP": str(tmp_path),
           "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip
    script = ROOT / ".github" / "scripts" / "collect_injuries.py"
    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs["count"] == str(count)
    assert len(json.loads(Path(outputs["file"]).read_text())) == count
    assert (count == 0) == summary.exists()
