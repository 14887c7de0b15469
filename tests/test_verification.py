"""Verify after a heal: the remote head itself must show it, or the heal failed and is paged.

A real bare remote with a `post-receive` hook plays the bot (or colleague) that puts back what a
heal pushed away: the push succeeds, the remote head does not show the heal.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import nats
import pytest
import structlog
from auto_healer.actions import ActionOptions, StepContext, StepPlan, action_names, register
from auto_healer.checkout import Checkout
from auto_healer.cli import main
from auto_healer.contracts import parse_injury
from auto_healer.decision import Context, PageAction, Settle, decide
from auto_healer.demo import SEED
from auto_healer.embedded import NatsServer
from auto_healer.healer import Healer
from auto_healer.outcomes import Kind, Outcome
from auto_healer.playbooks import load_playbooks

from tests.agent_support import AgentProcess, Events, seed_dirs, wait_until
from tests.conftest import PLAYBOOKS, git, injury, write_injuries
from tests.pager_receiver import Receiver
from tests.test_controls import ctl

Repo = tuple[Path, Path]
HACK = "core/src/random_stuff/hack.py"
MESSY = "core/src/messy.py"
KEEP_ENV = ("HOME", "PATH", "GIT_CONFIG_NOSYSTEM", "XDG_STATE_HOME")

HOOK = '''#!{python}
"""post-receive: a bot that puts these files back as they were whenever a push changes them."""
import os, subprocess, tempfile
from pathlib import Path

RESTORE = {restore!r}
env = {{k: os.environ[k] for k in {keep!r} if k in os.environ}}
run = lambda cwd, *a: subprocess.run(["git", *a], cwd=cwd, env=env, check=True, capture_output=True)
with tempfile.TemporaryDirectory() as tmp:
    run(".", "clone", "-q", os.getcwd(), tmp)
    changed = [rel for rel, text in RESTORE.items()
               if not Path(tmp, rel).is_file() or Path(tmp, rel).read_text() != text]
    for rel in changed:
        Path(tmp, rel).parent.mkdir(parents=True, exist_ok=True)
        Path(tmp, rel).write_text(RESTORE[rel])
    if changed:
        run(tmp, "add", "-A")
        run(tmp, "-c", "user.name=bot", "-c", "user.email=bot@x", "commit", "-qm", "put back")
        run(tmp, "push", "-q", "origin", "HEAD:main")
'''


def undo_on_push(remote: Path, restore: dict[str, str]) -> None:
    """Install the bot on the bare remote: every push is followed by one that restores files."""
    hook = remote / "hooks" / "post-receive"
    hook.write_text(HOOK.format(python=sys.executable, restore=restore, keep=KEEP_ENV))
    os.chmod(hook, 0o755)


def _healer(work: Path) -> Healer:
    return Healer(load_playbooks(PLAYBOOKS), Checkout.open(work), dry_run=False)


async def _heal(healer: Healer, *payloads: dict[str, object]) -> list[Outcome]:
    parsed = [parse_injury(json.dumps(p).encode()) for p in payloads]
    return list(await asyncio.gather(*(healer.handle(p) for p in parsed)))


def _on_remote(remote: Path, path: str) -> bool:
    return bool(git(remote, "ls-tree", "main", "--", path).strip())


async def test_heals_the_remote_head_shows_are_verified(repo: Repo) -> None:
    """A deletion and a format pushed as they are: healed, `verified` True."""
    remote, work = repo
    deleted, formatted = await _heal(
        _healer(work), injury("core/src/random_stuff/"), injury(MESSY, "unformatted_code")
    )
    for o in (deleted, formatted):
        assert (o.kind, o.verified) == (Kind.HEALED, True), o.reason
    assert not _on_remote(remote, "core/src/random_stuff")
    assert git(remote, "show", f"main:{MESSY}") != SEED[MESSY]


async def test_a_deletion_the_remote_puts_back_is_a_failed_heal_and_paged(repo: Repo) -> None:
    """The push succeeds, a hook re-adds the directory: failed, `verified` False, paged."""
    remote, work = repo
    undo_on_push(remote, {HACK: SEED[HACK]})
    [o] = await _heal(_healer(work), injury("core/src/random_stuff/"))
    assert (o.kind, o.verified) == (Kind.FAILED, False)
    assert o.commit and o.commit in git(remote, "log", "--format=%H", "main")  # it was pushed
    assert "does not show it: core/src/random_stuff is still there (1 files)" in o.reason
    d = decide(o, Context(redeliverable=True, pager=True))
    assert (d.page, d.settle, d.event_type, d.ok) == (
        PageAction.TRIGGER,
        Settle.ACK,
        "injury_heal_failed",
        False,
    )


async def test_a_format_the_remote_reverts_fails_the_formatters_check(repo: Repo) -> None:
    """The hook puts the unformatted file back: `ruff format --check` on the remote head fails."""
    remote, work = repo
    undo_on_push(remote, {MESSY: SEED[MESSY]})
    [o] = await _heal(_healer(work), injury(MESSY, "unformatted_code"))
    assert (o.kind, o.verified) == (Kind.FAILED, False), o.reason
    assert "the formatter's check fails on core/src/messy.py" in o.reason
    assert o.reason.endswith("messy.py: 1 file would be reformatted")


async def test_in_one_batch_only_the_heal_put_back_fails(repo: Repo) -> None:
    """Three injuries in one commit; the remote brings one back: that one fails, two verified."""
    remote, work = repo
    seed_dirs(work, ["v0", "v1", "v2"])
    put_back = next(p for p in git(remote, "ls-tree", "-r", "--name-only", "main").split()
                    if p.startswith("core/src/v1/"))  # fmt: skip
    undo_on_push(remote, {put_back: git(remote, "show", f"main:{put_back}")})
    outcomes = await _heal(_healer(work), *(injury(f"core/src/v{i}/") for i in range(3)))
    assert len({o.commit for o in outcomes}) == 1  # one batch, one push
    got = [(o.kind, o.verified) for o in outcomes]
    assert got == [(Kind.HEALED, True), (Kind.FAILED, False), (Kind.HEALED, True)]


@pytest.fixture
def pager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A real receiver configured as the one-shot's pager; structlog reset after `main()`."""
    r = Receiver().start()
    monkeypatch.setenv("PAGER_WEBHOOK_URL", r.url)
    monkeypatch.setenv("PAGER_ROUTING_KEY", "R0UTING")
    monkeypatch.setenv("PAGER_BACKOFF_S", "0.01")
    yield r
    r.stop()
    structlog.reset_defaults()


def test_the_one_shot_pages_an_unverified_heal_and_a_dry_run_verifies_nothing(
    repo: Repo, tmp_path: Path, pager: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """`heal`: exit 1, a trigger naming the remote head, `verified: false`; a plan: `null`."""
    remote, work = repo
    undo_on_push(remote, {HACK: SEED[HACK]})
    injuries = write_injuries(tmp_path / "i.json", injury("core/src/random_stuff/"))
    base = ["heal", str(injuries), "--repo", str(work), "--playbooks", str(PLAYBOOKS)]
    assert main([*base, "--dry-run", "--format", "json"]) == 0
    [planned] = json.loads(capsys.readouterr().out)["outcomes"]
    assert (planned["outcome"], planned["verified"]) == ("planned", None)
    assert main([*base, "--format", "json"]) == 1
    [failed] = json.loads(capsys.readouterr().out)["outcomes"]
    assert (failed["outcome"], failed["verified"]) == ("failed", False)
    [trigger] = [r.json for r in pager.requests]
    assert trigger["event_action"] == "trigger"
    assert "not verified" in json.dumps(trigger)
    assert main([*base, "--format", "text"]) == 1  # the bot put it back again
    assert "verified on the remote: NO" in capsys.readouterr().out


def test_an_action_without_a_check_after_the_push_is_not_registered() -> None:
    """The protocol asks every action for `verify`: one without it is refused by the registry."""

    class NoCheck:
        name: ClassVar[str] = "no_check"
        options_model: ClassVar[type[ActionOptions]] = ActionOptions

        async def plan(self, ctx: StepContext, options: ActionOptions) -> StepPlan:
            return StepPlan(summary="nothing")

    with pytest.raises(TypeError, match="does not implement the Action protocol"):
        register(NoCheck)
    assert "no_check" not in action_names()


@pytest.mark.timeout(120)
async def test_the_agent_announces_and_keeps_verified_and_pages_what_failed(
    tmp_path: Path, repo: Repo, nats_server: NatsServer
) -> None:
    """Agent in JetStream mode: events carry `verified`, `show` tells it, the failure is paged."""
    remote, work = repo
    seed_dirs(work, ["fine"])
    undo_on_push(remote, {HACK: SEED[HACK]})
    receiver = Receiver().start()
    events = await Events().start(nats_server.url)
    env = {"PAGER_WEBHOOK_URL": receiver.url, "PAGER_ROUTING_KEY": "R0UTING"}
    agent = AgentProcess(tmp_path, "a", nats_server.url, remote, jetstream=True, env=env)
    try:
        agent.wait_ready()
        await _publish_js(nats_server.url, ["core/src/fine/", "core/src/random_stuff/"])
        await events.wait_for(2, 60)
        by_path = {e["metadata"]["injury"]["affected_path"]: e for e in events.items}
        fine, undone = by_path["core/src/fine/"], by_path["core/src/random_stuff/"]
        assert (fine["event_type"], fine["metadata"]["verified"]) == ("injury_healed", True)
        assert (undone["event_type"], undone["metadata"]["verified"]) == (
            "injury_heal_failed",
            False,
        )

        def triggers() -> list[object]:
            return [p for p in receiver.delivered if p["event_action"] == "trigger"]

        await wait_until(lambda: len(triggers()) >= 1, 30, "the trigger", seen=agent.logs)
        assert "not verified" in json.dumps(triggers())
        story = ctl(nats_server.url, "show", undone["metadata"]["injury_id"])
        assert "verified: False" in story
        assert "NOT VERIFIED" in ctl(nats_server.url, "history", "--kind", "failed")
    finally:
        agent.kill()
        await events.close()
        receiver.stop()


async def _publish_js(url: str, paths: list[str]) -> None:
    nc = await nats.connect(url)
    for path in paths:
        await nc.jetstream().publish("aura.hive.injury", json.dumps(injury(path)).encode())
    await nc.drain()


async def test_a_heal_put_back_every_time_counts_for_breaker_and_recurrence(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """Pushed but not verified still counts: a breaker place kept, and the third return of a
    problem that was put back after each heal is held as a fix that does not hold."""
    import shutil

    from auto_healer import breaker, controls
    from auto_healer.contracts import parse_injury_obj
    from auto_healer.guard import Guard
    from auto_healer.kvcell import KvCell

    books = tmp_path / "books"
    shutil.copytree(PLAYBOOKS, books)
    shipped = books / "unauthorized_directory.yaml"
    shipped.write_text(shipped.read_text() + "recurrence: {max_heals: 2, window_s: 3600}\n")
    nc = await nats.connect(nats_server.url)
    try:
        cells = await KvCell.open(nc.jetstream(), controls.BUCKET_CONTROLS)
        limits = breaker.Limits(max_heals=100, window_s=600)
        guard = Guard(controls.Controls(cells), load_playbooks(books), repo="r", limits=limits)

        async def put_back(parsed: object) -> Outcome:
            return Outcome(Kind.FAILED, "pushed, but not verified", injury=parsed,  # type: ignore[arg-type]
                           commit="c" * 40, verified=False)  # fmt: skip

        got = []
        for i in range(3):
            payload = injury("core/src/random_stuff/", timestamp=1735920000.0 + i)
            got.append(await guard.handle(parse_injury_obj(payload), put_back))
        assert [o.kind for o in got] == [Kind.FAILED, Kind.FAILED, Kind.HELD]
        assert "the fix does not hold: healed 2 times" in got[2].reason
        state = await breaker.status(cells, "r")
        assert state is not None and state.count == 2
    finally:
        await nc.close()
