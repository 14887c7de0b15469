"""Packaging: a real install outside the tree (the lock, then the project) runs demo, validate
and heal from any directory; the locks pin every dependency with hashes; the pre-commit hooks
are a valid manifest and their check fails showing the plan."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import injury, tree_digest, write_injuries
from tests.test_deploy_config import BIN, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SHIPPED = sorted(p.name for p in (ROOT / "playbooks").glob("*.yaml"))


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a pip-compile lock; each has a hash."""
    found: dict[str, str] = {}
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            spec, _, hashes = line.partition(" ")
            name, _, version = spec.partition("==")
            assert version and "--hash=sha256:" in hashes, f"{lock.name}: unpinned {line[:80]}"
            found[name.lower().replace("_", "-")] = version
    return found


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", []), ("requirements-dev.lock", ["dev"])]
)
def test_locks_pin_every_dependency_with_hashes(lock: str, extras: list[str]) -> None:
    """Each lock pins (with hashes) a version of every declared dependency and of setuptools
    that satisfies pyproject.toml: `make lock` was run after the last dependency change."""
    pinned = pins(ROOT / lock)
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]
    wanted += [d for extra in extras for d in project["optional-dependencies"][extra]]
    for dep in map(Requirement, wanted):
        name = dep.name.lower().replace("_", "-")
        assert name in pinned, f"{lock} misses {dep.name}: run `make lock`"
        assert dep.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, pyproject wants {dep}: run `make lock`"
        )


def test_shipped_playbooks_are_the_repositorys_one_copy() -> None:
    """The package's playbooks_shipped is a link to playbooks/, not a second copy."""
    shipped = ROOT / "agents" / "auto_healer" / "playbooks_shipped"
    assert shipped.is_symlink()
    assert shipped.resolve() == (ROOT / "playbooks").resolve()
    assert PYPROJECT["project"]["license"] == "MIT"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_installed_outside_the_tree_runs_from_any_directory(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The Dockerfile's install (lock with hashes, then the project) in a fresh venv: validate,
    demo and heal work from an unrelated directory with the shipped playbooks."""
    src = tmp_path / "src"  # what the image's build context holds, nothing more
    for name in ("agents", "playbooks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--require-hashes", "-r", str(src / "requirements.lock")], check=True)
    built = subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", str(src)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    assert "Deprecat" not in built.stderr, built.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PLAYBOOKS_DIR"}
    healer = str(venv / "bin" / "auto-healer")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([healer, *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    validated = run("validate")
    assert validated.returncode == 0, validated.stderr
    assert "site-packages/auto_healer/playbooks_shipped" in validated.stdout
    assert f"{len(SHIPPED)} playbooks valid" in validated.stdout
    demo = run("demo")
    assert demo.returncode == 0, demo.stderr
    _, work = repo
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    healed = run("heal", str(injuries), "--repo", str(work), "--dry-run", "--format", "json")
    assert healed.returncode == 0, healed.stderr
    assert '"planned": 1' in healed.stdout
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / SHIPPED[0]).write_text((ROOT / "playbooks" / SHIPPED[0]).read_text())
    overridden = run("validate", "--playbooks", str(mine))
    assert "1 playbooks valid" in overridden.stdout, overridden.stderr


def hooks() -> dict[str, dict[str, object]]:
    return {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}


def test_pre_commit_manifest_is_valid() -> None:
    """pre-commit itself accepts .pre-commit-hooks.yaml; the check hook is a dry-run."""
    result = subprocess.run(
        [str(BIN / "pre-commit"), "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    check = hooks()["auto-healer-check"]
    assert check["language"] == "python"
    assert check["pass_filenames"] is False
    assert "--check" in str(check["entry"]).split()


def test_pre_commit_check_fails_with_the_plan_and_changes_nothing(
    repo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The check hook's command, as pre-commit runs it in the checkout: exit 1 with the plan
    when something would be healed, exit 0 once nothing would; nothing written either way."""
    remote, work = repo
    check = hooks()["auto-healer-check"]
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    argv = [*shlex.split(str(check["entry"])), str(injuries)]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    before = (tree_digest(work), tree_digest(remote))
    failed = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
    assert failed.returncode == 1, failed.stderr
    assert "WOULD HEAL unauthorized_directory at core/src/random_stuff/" in failed.stdout
    assert "would be healed" in failed.stderr
    assert (tree_digest(work), tree_digest(remote)) == before
    shutil.rmtree(work / "core" / "src" / "random_stuff")
    clean = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
