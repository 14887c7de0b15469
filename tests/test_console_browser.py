"""The console in a real browser: Debian's headless Chromium driven by Playwright, against a
running agent on a real nats-server and a real bare remote. One agent and one browser for the
module (starting Chromium costs seconds); each test has its own browser context (cookies)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import commit_count, injury, injury_trailers
from tests.console_support import HELD, SECRET, TOKEN_NAME, ConsoleAgent, outcome, start, wait

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's `chromium` (apt-get install chromium, as "
        ".ci/run does) or set CHROMIUM to a Chromium binary",
        allow_module_level=True,
    )
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
pytestmark = pytest.mark.timeout(120)
UI_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleAgent]:
    yield from start(tmp_path_factory.mktemp("console-browser"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, console: ConsoleAgent) -> Iterator[Any]:
    context = browser.new_context(base_url=console.base)
    context.set_default_timeout(UI_TIMEOUT_MS)
    yield context.new_page()
    context.close()


def sign_in(page: Any) -> None:
    page.goto("/ui/login")
    page.fill("input[name=token]", SECRET)
    page.click("button:text('Sign in')")
    expect(page.locator("#who")).to_have_text(TOKEN_NAME)


def test_a_healed_injury_appears_in_the_live_list_and_links_to_its_story(
    page: Any, console: ConsoleAgent
) -> None:
    """With the outcomes page open, an injury healed meanwhile appears at the top (htmx polls);
    its link shows the story with the commit and the playbook's step."""
    page.goto("/ui/outcomes")
    console.publish(injury("core/src/healme/"))
    row = page.locator("#rows tr", has_text="core/src/healme/").first
    expect(row).to_contain_text("healed")
    commit = outcome(console, "healed", "core/src/healme/*")[0]["metadata"]["commit"]
    expect(row).to_contain_text(commit[:12])
    row.locator("a").click()
    expect(page.locator("h1")).to_contain_text("Injury")
    expect(page.locator("ol.story")).to_contain_text(commit)
    expect(page.locator("ol.story")).to_contain_text("delete_directory")
    assert "healme" not in console.strays()


def test_a_held_approval_is_approved_with_the_button_and_healed_once(
    page: Any, console: ConsoleAgent
) -> None:
    """An `approval: required` injury waits on the approvals page with its plan; Approve heals
    it on the remote, once, and the history says alice approved it."""
    console.publish(injury("core/src/guarded/", severity=HELD))
    sign_in(page)
    page.goto("/ui/approvals")
    request = page.locator("article.request", has_text="core/src/guarded")
    expect(request).to_contain_text("delete_directory on core/src/guarded")
    injury_id = request.get_attribute("data-injury")
    before = commit_count(console.remote)
    request.locator("button:text('Approve')").click()
    expect(page.locator(".flash")).to_contain_text(f"injury {injury_id} approved by {TOKEN_NAME}")
    wait(lambda: "guarded" not in console.strays(), "the approved heal on the remote")
    healed = wait(lambda: outcome(console, "healed", "core/src/guarded/*"), "the heal's outcome")
    assert len(healed) == 1 and f"approved by {TOKEN_NAME}" in healed[0]["metadata"]["reason"]
    assert commit_count(console.remote) == before + 1
    assert injury_trailers(console.remote).count(str(injury_id)) == 1
    page.goto("/ui/approvals")
    expect(page.locator("#approvals")).to_contain_text("no injury awaits approval")


def test_a_dead_letter_is_replayed_under_a_new_id(page: Any, console: ConsoleAgent) -> None:
    """An injury the agent refused is listed with its reason; Replay runs it again under a new
    id (recorded in the history as replayed by alice): refused again, it comes back as a new
    dead letter with that id, the old one gone."""
    console.publish(b'{"injury_type": "unauthorized_directory", "note": "no path"}')
    sign_in(page)
    letter = page.locator("table.letters tbody tr[data-seq]").first

    def listed() -> bool:
        page.goto("/ui/dead-letters")
        return letter.count() > 0

    wait(listed, "the dead letter on the page")
    expect(letter).to_contain_text("affected_path")  # the reason names the missing field
    seq = letter.get_attribute("data-seq")
    letter.locator("button:text('Replay')").click()
    flash = page.locator(".flash")
    expect(flash).to_contain_text("replayed as injury replay-")
    new_id = flash.inner_text().split("replayed as injury ", 1)[1].split()[0]
    found = wait(
        lambda: [e for e in console.api("history") if e["metadata"].get("injury_id") == new_id],
        "the replay and its outcome in the history",
        lambda found: len(found) >= 2,
    )
    kinds = {e["metadata"].get("outcome") or e["metadata"]["control"] for e in found}
    assert kinds == {"replay", "rejected"}
    control = next(e["metadata"] for e in found if e["event_type"] == "auto_healer_control")
    assert control["by"] == TOKEN_NAME and control["via"] == "console"
    page.goto("/ui/dead-letters")
    expect(page.locator(f"tr[data-seq='{seq}']")).to_have_count(0)
    expect(page.locator("table.letters tbody tr").first).to_contain_text(new_id)


def test_pause_and_resume_from_the_fleet_page(page: Any, console: ConsoleAgent) -> None:
    """Pause stops the replica (its metric and heartbeat say so); Resume lets it heal again."""
    sign_in(page)
    page.goto("/ui/fleet")
    expect(page.locator("table.replicas")).to_contain_text("active")
    page.fill("input[name=reason]", "maintenance window")
    page.click("button:text('Pause every replica')")
    expect(page.locator("#state")).to_have_text("Paused")
    expect(page.locator("section.pause")).to_contain_text("maintenance window")
    wait(lambda: console.agent.metric("auto_healer_paused") == 1, "the replica paused")
    replica = page.locator("table.replicas tbody tr").first
    expect(replica.locator("td").nth(4)).to_have_text("yes")  # its next heartbeat says so
    page.click("button:text('Resume')")
    expect(page.locator("#state")).to_have_text("Healing")
    wait(lambda: console.agent.metric("auto_healer_paused") == 0, "the replica resumed")


def test_writes_without_the_token_or_with_a_forged_csrf_token_are_refused(
    page: Any, console: ConsoleAgent
) -> None:
    """Not signed in, Pause is refused (sign in first); signed in but with a forged CSRF token,
    refused too; the replica never pauses."""
    page.goto("/ui/fleet")
    page.click("button:text('Pause every replica')")
    expect(page.locator(".refused")).to_contain_text("sign in with the console token first")
    sign_in(page)
    page.goto("/ui/fleet")
    page.eval_on_selector_all("input[name=csrf]", "els => els.forEach(e => e.value = 'forged')")
    page.click("button:text('Pause every replica')")
    expect(page.locator(".refused")).to_contain_text("bad or missing CSRF token")
    assert console.api("pause") == {"paused": False}
    assert console.agent.metric("auto_healer_paused") == 0
