"""The git checkout: open or clone, sync to the remote head, commit with trailers, push, retry."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from auto_healer.checkout import Checkout, Identity
from auto_healer.demo import SEED, make_repo
from auto_healer.errors import ConfigError, HealFailed, TransientError
from auto_healer.gitfail import safe_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import (
    PLAYBOOKS,
    commit_count,
    git,
    heal_cli,
    injury,
    remote_files,
    write_injuries,
)

Repo = tuple[Path, Path]
STUFF = "core/src/random_stuff"

# An `update` hook that, on its first run only, commits to main directly in the bare remote
# with plumbing, so the ref update of the push it is checking fails: the remote moved.
RACE_HOOK = """\
#!/bin/sh
marker="$GIT_DIR/moved-once"
[ -e "$marker" ] && exit 0
touch "$marker"
export GIT_AUTHOR_NAME=other GIT_AUTHOR_EMAIL=other@aura.hive
export GIT_COMMITTER_NAME=other GIT_COMMITTER_EMAIL=other@aura.hive
base=$(git rev-parse refs/heads/main)
blob=$(echo "written meanwhile" | git hash-object -w --stdin)
name=OTHER.md
tree=$({ git ls-tree "$base"; printf '100644 blob %s\\t%s\\n' "$blob" "$name"; } | git mktree)
commit=$(git commit-tree "$tree" -p "$base" -m "someone else pushed meanwhile")
git update-ref refs/heads/main "$commit" "$base"
"""


def hook(remote: Path, name: str, text: str) -> None:
    path = remote / "hooks" / name
    path.write_text(textwrap.dedent(text))
    path.chmod(0o755)


def other_clone_pushes(tmp_path: Path, remote: Path, name: str = "NEW.md") -> str:
    """Someone else pushes a commit to main; returns its sha."""
    other = tmp_path / f"other-{name}"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    (other / name).write_text("new\n")
    git(other, "add", "-A")
    git(other, "-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qm", f"add {name}")
    git(other, "push", "-q", "origin", "main")
    return git(other, "rev-parse", "HEAD").strip()


def test_open_refuses_what_is_not_a_usable_checkout(tmp_path: Path, repo: Repo) -> None:
    """Not a repo, a bare repo, no remote, or a detached HEAD: clear configuration errors."""
    remote, work = repo
    with pytest.raises(ConfigError, match="not a git checkout"):
        Checkout.open(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="bare"):
        Checkout.open(remote)
    lonely = tmp_path / "lonely"
    git(tmp_path, "init", "-q", str(lonely))
    with pytest.raises(ConfigError, match="no remote 'origin'"):
        Checkout.open(lonely)
    git(work, "checkout", "-q", "--detach")
    with pytest.raises(ConfigError, match="detached"):
        Checkout.open(work)
    assert Checkout.open(work, branch="main").branch == "main"


def test_sync_brings_the_checkout_to_the_remote_head(tmp_path: Path, repo: Repo) -> None:
    """sync fetches and moves the checkout to the remote head, clean."""
    remote, work = repo
    sha = other_clone_pushes(tmp_path, remote)
    checkout = Checkout.open(work)
    assert checkout.sync() == sha
    assert (work / "NEW.md").exists()
    assert not checkout.repo.is_dirty(untracked_files=True)


def test_sync_keeps_a_users_untracked_files(repo: Repo) -> None:
    """An untracked file in a user's checkout (an injuries file) survives sync and restore."""
    _, work = repo
    checkout = Checkout.open(work)
    (work / "injuries.json").write_text("[]")
    base = checkout.sync()
    checkout.restore(base)
    assert (work / "injuries.json").read_text() == "[]"


def test_sync_refuses_to_discard_local_work(repo: Repo) -> None:
    """Uncommitted changes or unpushed commits are never reset: a retryable TransientError."""
    _, work = repo
    checkout = Checkout.open(work)
    (work / "pyproject.toml").write_text("mine")
    with pytest.raises(TransientError, match="uncommitted changes"):
        checkout.sync()
    git(work, "add", "-A")
    git(work, "-c", "user.name=me", "-c", "user.email=me@me", "commit", "-qm", "local")
    with pytest.raises(TransientError, match="1 commits not on origin/main"):
        checkout.sync()
    assert (work / "pyproject.toml").read_text() == "mine"


def test_sync_moves_a_checkout_on_another_branch_at_the_same_commit(repo: Repo) -> None:
    """A checkout whose HEAD is another branch at the remote head is still switched to the
    branch it heals (only a clean checkout on that very branch skips `checkout -B`)."""
    _, work = repo
    git(work, "checkout", "-q", "-b", "elsewhere")
    checkout = Checkout.open(work, branch="main")
    checkout.sync()
    assert git(work, "symbolic-ref", "HEAD").strip() == "refs/heads/main"


def test_commit_carries_trailers_and_identity(repo: Repo) -> None:
    """A heal commit has the message, `Injury-Id`, `Healed-By` and the configured identity."""
    _, work = repo
    checkout = Checkout.open(work, identity=Identity("Healer Bot", "bot@hive.test"))
    base = checkout.sync()
    shutil.rmtree(work / STUFF)
    checkout.apply([STUFF], {}, ())
    assert checkout.has_staged_changes()
    sha = checkout.commit("auto-heal: remove it", "bee-7\nForged: yes")
    body = git(work, "log", "-1", "--format=%an <%ae>%n%cn%n%B", sha)
    assert body.startswith("Healer Bot <bot@hive.test>\nHealer Bot\nauto-heal: remove it\n\n")
    assert "Injury-Id: bee-7?Forged: yes\nHealed-By: auto-healer" in body
    assert git(work, "rev-parse", "HEAD~1").strip() == base


def test_a_non_fast_forward_push_is_transient_and_never_forced(tmp_path: Path, repo: Repo) -> None:
    """A push rejected because the remote moved is a TransientError; the remote keeps its head."""
    remote, work = repo
    checkout = Checkout.open(work)
    checkout.sync()
    theirs = other_clone_pushes(tmp_path, remote)
    checkout.apply([STUFF], {}, ())
    checkout.commit("heal", "id-1")
    with pytest.raises(TransientError, match="git push failed"):
        checkout.push("main")
    assert git(remote, "rev-parse", "main").strip() == theirs


def test_a_push_declined_by_the_remote_is_a_failure(repo: Repo) -> None:
    """A pre-receive hook that declines the push is a HealFailed (not retried)."""
    remote, work = repo
    hook(remote, "pre-receive", "#!/bin/sh\necho 'branch is protected' >&2\nexit 1\n")
    checkout = Checkout.open(work)
    checkout.sync()
    checkout.apply([STUFF], {}, ())
    checkout.commit("heal", "id-1")
    with pytest.raises(HealFailed, match="push"):
        checkout.push("main")


def test_repository_hooks_never_run(repo: Repo) -> None:
    """The checkout's own hooks (post-checkout, pre-commit, pre-push) are never executed."""
    _, work = repo
    for name in ("post-checkout", "pre-commit", "commit-msg", "pre-push"):
        hook(work / ".git", name, f"#!/bin/sh\ntouch {work.parent}/RAN-{name}\nexit 1\n")
    checkout = Checkout.open(work)
    checkout.sync()
    checkout.apply([STUFF], {}, ())
    checkout.commit("heal", "id")
    checkout.push("main")
    assert not list(work.parent.glob("RAN-*"))


def test_heal_retries_when_the_remote_moves_before_the_push(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Remote moved between sync and push: fetch, rebase onto the new head, push on attempt 2."""
    remote, work = repo
    hook(remote, "update", RACE_HOOK)
    path = write_injuries(tmp_path / "i.json", injury(STUFF + "/"))
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    [outcome] = report["outcomes"]
    assert outcome["outcome"] == "healed"
    assert outcome["attempts"] == 2
    assert "push_raced" in err
    log = git(remote, "log", "--format=%s", "main").splitlines()
    assert log == [
        "auto-heal: remove unauthorized directory core/src/random_stuff/",
        "someone else pushed meanwhile",
        "seed the hive",
    ]
    assert "OTHER.md" in remote_files(remote)
    assert not any(f.startswith(STUFF) for f in remote_files(remote))
    assert git(work, "status", "--porcelain") == ""


def test_retries_are_bounded_by_time_when_the_remote_keeps_moving(
    repo: Repo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote that moves before every push: rebased and pushed again until PUSH_RACE_BUDGET_S
    is spent, then one retryable failure (not retried again), every other commit kept."""
    remote, work = repo
    always = RACE_HOOK.replace('[ -e "$marker" ] && exit 0\n', "").replace(
        "OTHER.md", "OTHER-$$.md"
    )
    hook(remote, "update", always)
    monkeypatch.setenv("PUSH_RACE_BUDGET_S", "1")
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    started = time.monotonic()
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert time.monotonic() - started < 10  # one budget, not the retry policy's backoffs on top
    assert code == 1
    assert report is not None
    [outcome] = report["outcomes"]
    assert outcome["outcome"] == "failed"
    assert "1 s push race budget" in outcome["reason"]
    assert "heal_retry" not in err
    log = git(remote, "log", "--format=%s", "main").splitlines()
    assert log.count("someone else pushed meanwhile") >= 2
    assert not any(line.startswith("auto-heal") for line in log)
    assert git(work, "status", "--porcelain") == ""


def test_a_failed_heal_leaves_the_checkout_clean(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A push the remote declines fails the heal (exit 1) and the checkout is back at its base."""
    remote, work = repo
    hook(remote, "pre-receive", "#!/bin/sh\nexit 1\n")
    base = git(work, "rev-parse", "HEAD")
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    code, report, _ = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 1
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "failed"
    assert git(work, "rev-parse", "HEAD") == base
    assert git(work, "status", "--porcelain", "--ignored") == ""
    assert (work / STUFF / "hack.py").exists()


def test_heal_branch_pushes_to_auto_heal_id(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`push_to: heal-branch` pushes one commit to auto-heal/<id>, once; main stays as it was."""
    remote, work = repo
    books = tmp_path / "books"
    shutil.copytree(PLAYBOOKS, books)
    shipped = books / "unauthorized_directory.yaml"
    shipped.write_text(shipped.read_text().replace("push_to: branch", "push_to: heal-branch"))
    main_before = git(remote, "rev-parse", "main")
    path = tmp_path / "i.jsonl"
    path.write_text(
        '{"timestamp": 1, "injury_type": "unauthorized_directory", '
        f'"affected_path": "{STUFF}", "severity": "high", '
        '"recommended_action": "delete_directory", "auto_heal": true}\n'
    )
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work), playbooks=books)
    assert code == 0, err
    assert report is not None
    branch = report["outcomes"][0]["branch"]
    assert branch == "auto-heal/" + report["outcomes"][0]["injury_id"]
    assert git(remote, "rev-parse", "main") == main_before
    assert commit_count(remote, branch) == 2
    assert not any(f.startswith(STUFF) for f in remote_files(remote, branch))
    assert git(work, "rev-parse", "HEAD") == main_before
    assert git(work, "status", "--porcelain") == ""
    tip = git(remote, "rev-parse", branch)
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2030-01-01T00:00:00Z")  # a different commit sha
    again, report, err = heal_cli(capsys, str(path), "--repo", str(work), playbooks=books)
    assert again == 0, err
    assert git(remote, "rev-parse", branch) == tip


def test_delete_removes_tracked_and_ignored_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tracked and untracked (ignored) files go; a directory of only ignored files is skipped."""
    remote, work = make_repo(tmp_path, {**SEED, ".gitignore": "*.pyc\nbuild/\n"})
    (work / STUFF / "cache.pyc").write_bytes(b"\0")
    (work / "build" / "out").mkdir(parents=True)
    (work / "build" / "out" / "a.o").write_bytes(b"\0")
    path = write_injuries(tmp_path / "i.json", injury(STUFF), injury("build"))
    code, report, err = heal_cli(capsys, str(path), "--repo", str(work))
    assert code == 0, err
    assert report is not None
    assert [o["outcome"] for o in report["outcomes"]] == ["healed", "skipped"]
    assert report["outcomes"][0]["steps"][0]["file_count"] == 3
    assert not (work / STUFF).exists()
    assert not (work / "build").exists()
    assert commit_count(remote) == 2
    assert git(work, "status", "--porcelain", "--ignored") == ""


def test_heal_a_cloned_url_on_a_named_branch(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--repo-url URL --branch B` clones into WORK_DIR and heals that branch only."""
    remote, work = repo
    git(work, "push", "-q", "origin", "main:release")
    monkeypatch.setenv("WORK_DIR", str(tmp_path / "clones"))
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    args = (str(path), "--repo-url", str(remote), "--branch", "release")
    code, report, err = heal_cli(capsys, *args)
    assert code == 0, err
    assert report is not None
    assert report["outcomes"][0]["branch"] == "release"
    assert not any(f.startswith(STUFF) for f in remote_files(remote, "release"))
    assert any(f.startswith(STUFF) for f in remote_files(remote, "main"))
    assert list((tmp_path / "clones").iterdir())
    again, report, _ = heal_cli(capsys, *args)
    assert again == 0
    assert report is not None
    assert report["outcomes"][0]["outcome"] == "skipped"


def test_committer_identity_comes_from_the_environment(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIT_AUTHOR_NAME / GIT_AUTHOR_EMAIL set who the heal commit is by."""
    remote, work = repo
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Hive Medic")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "medic@hive.test")
    path = write_injuries(tmp_path / "i.json", injury(STUFF))
    assert heal_cli(capsys, str(path), "--repo", str(work))[0] == 0
    assert git(remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main").strip() == (
        "Hive Medic <medic@hive.test>|Hive Medic <medic@hive.test>"
    )


def test_a_hanging_remote_is_killed_and_transient(repo: Repo) -> None:
    """A fetch that hangs (a real `ext::` transport that sleeps) is killed at the timeout."""
    _, work = repo
    git(work, "config", "protocol.ext.allow", "always")
    git(work, "remote", "set-url", "origin", "ext::sleep 20")
    checkout = Checkout.open(work)
    checkout.network_timeout_s = 0.5
    with pytest.raises(TransientError, match=r"did not complete in 0\.5 secs"):
        checkout.sync()


@given(st.text(max_size=80))
@settings(max_examples=60, deadline=None)
def test_heal_branch_names_are_always_valid_refs(injury_id: str) -> None:
    """Property: whatever the injury id, auto-heal/<safe_ref(id)> is a valid git branch name."""
    ref = f"refs/heads/auto-heal/{safe_ref(injury_id)}"
    done = subprocess.run(["git", "check-ref-format", ref], capture_output=True)
    assert done.returncode == 0, ref


def test_two_processes_never_share_one_clone(tmp_path: Path, repo: Repo) -> None:
    """A second process cloning the same URL into the same WORK_DIR is refused, clearly."""
    import subprocess
    import sys

    remote, _ = repo
    first = Checkout.clone(str(remote), tmp_path / "w")
    code = (
        "import sys\nfrom pathlib import Path\nfrom auto_healer.checkout import Checkout\n"
        "from auto_healer.errors import ConfigError\n"
        "try:\n    Checkout.clone(sys.argv[1], Path(sys.argv[2]))\n"
        "except ConfigError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(remote), str(tmp_path / "w")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "in use by another auto-healer process" in out
    assert "WORK_DIR" in out
    first.close()
