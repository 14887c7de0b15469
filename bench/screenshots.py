"""The console's screenshots in docs/console/: `make screenshots` (`python -m bench.screenshots`).

Starts nats-server, a bare remote and one agent with `--console` (as the browser tests do),
gives it a few injuries (heals, an escalation, one held for approval, one refused into the dead
letters), then photographs each page in Debian's headless Chromium. Not part of `make test`:
the test run changes no tracked file.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.conftest import injury
from tests.console_support import HELD, SECRET, outcome, start, wait

OUT = Path(__file__).resolve().parent.parent / "docs" / "console"


def main() -> int:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp:
        agents = start(Path(tmp))
        console = next(agents)
        try:
            console.publish(
                injury("core/src/healme/"),
                injury("core/src/paused/"),
                injury("core/src/replayed/", injury_type="unauthorized_directory"),
                injury("core/src/not_mine/", auto_heal=False),
                injury("core/src/guarded/", severity=HELD),
                b'{"injury_type": "unauthorized_directory", "note": "no affected_path"}',
            )
            wait(lambda: console.api("approvals"), "the held approval")
            wait(lambda: console.api("dead-letters"), "the dead letter")
            wait(lambda: len(outcome(console, "healed", "core/src/*")) >= 3, "three heals")
            wait(lambda: console.api("replicas"), "a heartbeat")
            healed = outcome(console, "healed", "core/src/healme/*")[0]["metadata"]["injury_id"]
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(
                    base_url=console.base, viewport={"width": 1280, "height": 800}
                )
                page.goto("/ui/login")
                page.fill("input[name=token]", SECRET)
                page.click("button:text('Sign in')")
                page.wait_for_selector("#who")
                for name, path in [
                    ("outcomes", "/ui/outcomes"),
                    ("injury", f"/ui/injury/{healed}"),
                    ("approvals", "/ui/approvals"),
                    ("dead-letters", "/ui/dead-letters"),
                    ("fleet", "/ui/fleet"),
                ]:
                    page.goto(path)
                    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                    print(f"wrote {OUT / name}.png")
                browser.close()
        finally:
            next(agents, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
