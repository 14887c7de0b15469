"""GitHub Actions: ci.yml, auto-heal.yml, the composite action, and the CLI's step outputs.

Workflows and the action are checked against check-jsonschema's bundled github-workflows and
github-actions schemas (offline). The guard step, the action's heal script and the injuries
collector run for real, on the `repo` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from auto_healer.embedded import NatsServer

from tests.conftest import git, injury, tree_digest, write_injuries
from tests.test_deploy_config import BIN, ROOT, check_jsonschema, load
from tests.test_heal_from_stream import AFTER, make_hive_repo, publish_before_and_after

WORKFLOWS = ROOT / ".github" / "workflows"
ACTION = ROOT / "actions" / "auto-heal" / "action.yml"


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The `on:` block (YAML 1.1 reads the bare key `on` as True)."""
    on = workflow.get("on", workflow.get(True))
    return {k: {} for k in on} if isinstance(on, list) else on


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


def test_image_is_built_on_main_and_tags_and_pushed_with_provenance() -> None:
    """image.yml lints the Dockerfile, then builds and pushes to GHCR with provenance and SBOM;
    a pull request builds without pushing."""
    wf = load(WORKFLOWS / "image.yml")
    on = triggers(wf)
    assert on["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert "pull_request" in on
    assert wf["permissions"] == {}
    (job,) = wf["jobs"].values()
    assert job["permissions"]["packages"] == "write"
    assert job["permissions"]["contents"] == "read"
    steps = job["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    assert uses.index("hadolint/hadolint-action") < uses.index("docker/build-push-action")
    build = steps[uses.index("docker/build-push-action")]["with"]
    assert build["provenance"] in (True, "mode=max")
    assert build["sbom"] is True
    assert build["push"] == "${{ github.event_name != 'pull_request' }}"
    login = steps[uses.index("docker/login-action")]
    assert login["with"]["registry"] == "${{ env.REGISTRY }}" and wf["env"]["REGISTRY"] == "ghcr.io"
    assert login["if"] == "github.event_name != 'pull_request'"
    attest = steps[uses.index("actions/attest-build-provenance")]
    assert attest["with"]["subject-digest"] == "${{ steps.build.outputs.digest }}"


def test_auto_heal_triggers() -> None:
    """auto-heal runs after the audit workflow, on both dispatches and on pull requests."""
    on = triggers(load(WORKFLOWS / "auto-heal.yml"))
    assert on["workflow_run"] == {"workflows": ["bee.Keeper"], "types": ["completed"]}
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
        "github.event.workflow_run.event == 'push'",
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


def test_after_an_audit_the_heal_reads_the_stream_on_a_self_hosted_runner() -> None:
    """bee.Keeper uploads no artifact: the heal job can read the stream from the cluster."""
    wf = load(WORKFLOWS / "auto-heal.yml")
    assert wf["env"]["AUDIT_WORKFLOW"] == triggers(wf)["workflow_run"]["workflows"][0]
    heal = wf["jobs"]["heal"]
    assert "github.event.workflow_run.event == 'schedule'" in " ".join(heal["if"].split())
    assert heal["runs-on"] == (
        "${{ github.event_name == 'workflow_run' && (vars.AUTO_HEAL_RUNNER || 'self-hosted') "
        "|| 'ubuntu-latest' }}"
    )
    steps = {s.get("id"): s for s in heal["steps"]}
    assert steps["injuries"]["env"]["STREAM_FALLBACK"] == "true"
    assert "steps.injuries.outputs.source == 'stream'" in steps["heal"]["if"]
    given = steps["heal"]["with"]
    assert given["from-stream"] == "${{ steps.injuries.outputs.source == 'stream' }}"
    assert given["since"] == "${{ github.event.workflow_run.run_started_at }}"
    assert given["nats-url"].startswith("${{ secrets.NATS_URL || vars.NATS_URL")
    assert "STREAM_FALLBACK" not in wf["jobs"]["review"]["steps"][2]["env"]


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
            "pager-format", "from-stream", "since", "stream", "nats-url"
            } <= set(action["inputs"])  # fmt: skip
    assert {"healed", "escalated", "failed"} <= set(action["outputs"])


def test_action_installs_from_the_lock() -> None:
    """The action installs the hashed lock, then auto-healer alone (what the image does)."""
    steps = load(ACTION)["runs"]["steps"]
    install = next(s["run"] for s in steps if s.get("name") == "Install auto-healer")
    words = " ".join(install.replace("\\\n", " ").split())
    assert '--require-hashes -r "$GITHUB_ACTION_PATH/../../requirements.lock"' in words
    assert '--no-deps --no-build-isolation "$GITHUB_ACTION_PATH/../.."' in words


def action_heal_script() -> str:
    steps = load(ACTION)["runs"]["steps"]
    return str(next(s["run"] for s in steps if s.get("id") == "heal"))


def action_env(tmp_path: Path, work: Path, **inputs: str) -> dict[str, str]:
    """The environment the action gives its heal step: defaults, dry-run, `inputs` over them."""
    runner_temp, output, summary = tmp_path / "runner", tmp_path / "out", tmp_path / "summary"
    return {
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_ACTION_PATH": str(ACTION.parent), "RUNNER_TEMP": str(runner_temp),
        "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
        "INJURIES": "", "FROM_STREAM": "false", "SINCE": "", "STREAM": "",
        "NATS_URL_INPUT": "", "REPO": str(work), "BRANCH": "", "PLAYBOOKS": "",
        "DRY_RUN": "true", "PAGER_FORMAT": "pagerduty", "PAGER_WEBHOOK_URL": "",
        "PAGER_ROUTING_KEY": "", "GIT_AUTHOR_NAME": "auto-healer",
        "GIT_AUTHOR_EMAIL": "auto-healer@aura.hive", "LOG_FORMAT": "console", **inputs,
    }  # fmt: skip


def test_action_heal_step_writes_plan_summary_and_outputs(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The action's real heal script, dry-run: Markdown plan in the summary, counts as outputs."""
    remote, work = repo
    before = (tree_digest(work), tree_digest(remote))
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    output, summary = tmp_path / "out", tmp_path / "summary"
    env = action_env(tmp_path, work, INJURIES=str(injuries))
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


def test_action_heal_step_reads_the_stream_since_the_audit_started(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """from-stream + since: the action plans only what reached the stream after `since`."""
    _, work = make_hive_repo(tmp_path)
    since = publish_before_and_after(nats_server.url)
    env = action_env(tmp_path, work, FROM_STREAM="true", SINCE=since,
                     NATS_URL_INPUT=nats_server.url)  # fmt: skip
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", action_heal_script()],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    outputs = dict(line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines())
    assert (outputs["planned"], outputs["rejected"], outputs["failed"]) == ("2", "0", "0")
    assert all(path in result.stdout for path in AFTER)
    # Without `since` the action falls back to --since-run, which needs GITHUB_RUN_STARTED_AT.
    env = {**action_env(tmp_path, work, FROM_STREAM="true", NATS_URL_INPUT=nats_server.url),
           "GITHUB_RUN_STARTED_AT": since}  # fmt: skip
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", action_heal_script()],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert all(path in result.stdout for path in AFTER)


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


def run_collector(tmp_path: Path, path: str, **extra: str) -> tuple[dict[str, str], str]:
    """Run the collector for a workflow_run with PATH = `path`; its outputs and its summary."""
    output, summary = tmp_path / "out", tmp_path / "summary"
    env = {"PATH": path, "EVENT_NAME": "workflow_run", "RUN_ID": "42", "RUNNER_TEMP": str(tmp_path),
           "GITHUB_REPOSITORY": "aura/hive", "AUDIT_ARTIFACT": "injuries",
           "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary), **extra}  # fmt: skip
    script = ROOT / ".github" / "scripts" / "collect_injuries.py"
    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return outputs, summary.read_text() if summary.exists() else ""


def test_collector_without_an_artifact_hands_over_to_the_stream(tmp_path: Path) -> None:
    """No artifact (bee.Keeper uploads none; here not even `gh`): source=stream, said why."""
    empty = tmp_path / "bin"
    empty.mkdir()
    outputs, summary = run_collector(tmp_path, str(empty), STREAM_FALLBACK="true")
    assert outputs["source"] == "stream"
    assert "count" not in outputs
    assert "run 42 has no artifact 'injuries'" in outputs["note"]
    assert "--from-stream" in summary
    (tmp_path / "review").mkdir()
    outputs, _ = run_collector(tmp_path / "review", str(empty))  # the review: no fallback
    assert (outputs["source"], outputs["count"]) == ("file", "0")


def test_collector_prefers_the_artifact_when_the_audit_uploaded_one(tmp_path: Path) -> None:
    """An audit that uploaded `injuries` is healed from it, even with the stream fallback on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"  # GitHub is out of reach: `gh run download` writes what it would fetch
    gh.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "assert args[:3] == ['run', 'download', '42'], args\n"
        "out = args[args.index('--dir') + 1]\n"
        f"open(out + '/injuries.json', 'w').write(json.dumps([{injury('core/src/x/')!r}]))\n"
    )
    gh.chmod(0o755)
    outputs, _ = run_collector(tmp_path, str(bin_dir), STREAM_FALLBACK="true")
    assert (outputs["source"], outputs["count"]) == ("file", "1")
    assert json.loads(Path(outputs["file"]).read_text())[0]["affected_path"] == "core/src/x/"
