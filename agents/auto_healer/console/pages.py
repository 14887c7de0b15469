"""The console's pages under `/ui`: server-rendered HTML (Jinja2, autoescaped: payload text is
never rendered raw), htmx for the live parts, plain forms for every action.

Pages: `/ui/outcomes` (newest first, filters, a chart of the last 24 hours), `/ui/injury/ID`
(the whole story), `/ui/approvals`, `/ui/dead-letters`, `/ui/fleet`, `/ui/login`. Actions post
to `/ui/act/ACTION` with the session's CSRF token and come back to the page with a message.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from auto_healer import history
from auto_healer.console import api
from auto_healer.console.backend import Backend
from auto_healer.console.security import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    Guardian,
    Refused,
    Session,
    same_origin,
)
from auto_healer.console.web import Request, Response, redirect
from auto_healer.errors import ConfigError, TransientError
from auto_healer.sources.dead_letters import DeadLetter

STATIC = {"htmx.min.js": "text/javascript", "console.css": "text/css"}
FILTERS = ("since", "kind", "playbook", "path")
POLL = "every 3s"
SHOWN_BODY_BYTES = 4096  # of each dead letter's body on its page; /api/dead-letters has it whole


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at else "-"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


ENV = Environment(
    loader=PackageLoader("auto_healer.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["when"] = _when
ENV.filters["pretty"] = _pretty


def chart(rows: list[dict[str, Any]], width: int = 720, height: int = 160) -> dict[str, Any]:
    """The bars of the per-hour chart (numbers only: the SVG has no text from payloads)."""
    top = max([1, *(r[k] for r in rows for k in api.CHART_KINDS)])
    slot = width / max(1, len(rows))
    bar = slot / (len(api.CHART_KINDS) + 1)
    bars = []
    for i, r in enumerate(rows):
        for j, kind in enumerate(api.CHART_KINDS):
            h = (height - 20) * r[kind] / top
            x = i * slot + j * bar
            y, w = round(height - 20 - h, 1), round(bar, 1)
            bars.append({"x": round(x, 1), "y": y, "w": w, "h": round(h, 1), "kind": kind,
                         "n": r[kind], "hour": r["hour"]})  # fmt: skip
    labels = [
        {"x": round(i * slot, 1), "text": time.strftime("%H:00", time.gmtime(r["hour"]))}
        for i, r in enumerate(rows)
        if i % 3 == 0
    ]
    totals = {k: sum(r[k] for r in rows) for k in api.CHART_KINDS}
    return {"bars": bars, "labels": labels, "width": width, "height": height, "top": top,
            "totals": totals}  # fmt: skip


class Pages:
    """Renders the pages and carries out the forms' actions."""

    def __init__(self, backend: Backend, guardian: Guardian, repo: str) -> None:
        self.backend, self.guardian, self.repo = backend, guardian, repo

    def handle(self, req: Request) -> Response:
        session = self.guardian.session(req.cookies.get(SESSION_COOKIE))
        try:
            if req.method == "POST":
                return self._post(req, session)
            return self._get(req, session)
        except Refused as exc:
            return self._page("refused.html", req, session, status=exc.status, reason=exc.reason)
        except ConfigError as exc:
            return self._page("refused.html", req, session, status=400, reason=str(exc))
        except (TimeoutError, TransientError) as exc:  # the KV store's timeout is transient
            return self._page("refused.html", req, session, status=api.no_answer_status(exc),
                              reason=api.unanswered(req.method), heading="No answer")  # fmt: skip

    def _get(self, req: Request, session: Session | None) -> Response:
        path = req.path.removeprefix("/ui").strip("/")
        if path == "":
            return redirect("/ui/outcomes")
        if path.startswith("static/"):
            return _static(path.removeprefix("static/"))
        if path in ("outcomes", "outcomes/rows"):
            entries = api.outcomes(self.backend, req.query)
            query = urlencode({k: req.query[k] for k in FILTERS if req.query.get(k)})
            if path == "outcomes/rows":
                return self._page("rows.html", req, session, entries=entries, query=query)
            rows = api.per_hour(self.backend.history(24 * 3600))
            return self._page("outcomes.html", req, session, entries=entries, query=query,
                              chart=chart(rows), poll=POLL, filters=req.query)  # fmt: skip
        if path.startswith("injury/"):
            injury_id = path.removeprefix("injury/")
            found = history.select(self.backend.history(30 * 86400), injury_id=injury_id)
            snap = self.backend.snapshot()
            request = next((r for r in snap.approvals if r.injury_id == injury_id), None)
            return self._page("injury.html", req, session, injury_id=injury_id, story=found,
                              request=request, status=200 if found or request else 404)  # fmt: skip
        if path in ("approvals", "approvals/rows"):
            snap = self.backend.snapshot()
            page = "approval_rows.html" if path.endswith("rows") else "approvals.html"
            return self._page(page, req, session, requests=snap.approvals, poll=POLL)
        if path == "dead-letters":
            letters = [_letter(d) for d in self.backend.dead_letters()]
            return self._page("dead_letters.html", req, session, letters=letters)
        if path in ("fleet", "fleet/body"):
            snap = self.backend.snapshot()
            page = "fleet_body.html" if path.endswith("body") else "fleet.html"
            return self._page(page, req, session, snap=snap, poll=POLL, now=time.time())
        if path == "login":
            return self._page("login.html", req, session)
        raise Refused(404, f"no page /ui/{path}")

    def _post(self, req: Request, session: Session | None) -> Response:
        path = req.path.removeprefix("/ui/").strip("/")
        h = req.headers
        if path == "login":
            same_origin(h.get("origin"), h.get("referer"), req.host)
            new = self.guardian.sign_in(req.form.get("token", ""))
            attrs = f"HttpOnly; SameSite=Strict; Path=/; Max-Age={int(SESSION_TTL_S)}"
            cookie = f"{SESSION_COOKIE}={new}; {attrs}" + ("; Secure" if req.secure else "")
            return redirect("/ui/fleet", ("Set-Cookie", cookie))
        sid = req.cookies.get(SESSION_COOKIE)
        writer = self.guardian.form_writer(
            sid, req.form.get("csrf", ""), h.get("origin"), h.get("referer"), req.host
        )
        if path == "logout":
            self.guardian.sign_out(sid)
            return redirect("/ui/outcomes", ("Set-Cookie", f"{SESSION_COOKIE}=; Max-Age=0; Path=/"))
        if not path.startswith("act/"):
            raise Refused(404, f"no action /ui/{path}")
        try:
            writer.flash.append(api.act(self.backend, path.removeprefix("act/"), req.form,
                                        writer.name))  # fmt: skip
        except ConfigError as exc:  # nothing to do (decided already, replayed already...)
            writer.flash.append(f"not done: {exc}")
        back = req.form.get("back", "")
        safe = back.startswith("/ui/") and not back.startswith("//") and "\\" not in back
        safe = safe and back.isprintable()  # no CR LF: it becomes the Location header
        return redirect(back if safe else "/ui/outcomes")

    def _page(
        self, name: str, req: Request, session: Session | None, *, status: int = 200, **data: Any
    ) -> Response:
        flash = list(session.flash) if session else []
        if session and not name.endswith("rows.html") and not name.endswith("body.html"):
            session.flash.clear()
        html = ENV.get_template(name).render(
            session=session,
            writable=self.guardian.writable,
            csrf=session.csrf if session else "",
            flash=flash,
            here=req.path + (f"?{urlencode(req.query)}" if req.query else ""),
            repo=self.repo,
            **data,
        )
        # a lone surrogate (JSON allows `\ud800`) in any shown text must not fail the page
        return Response(status, html.encode("utf-8", "replace"))


def _letter(d: DeadLetter) -> dict[str, Any]:
    """A dead letter for its page: the start of its body, and how many bytes are left out."""
    doc = api.letter_doc(d)
    doc["body"] = d.data[:SHOWN_BODY_BYTES].decode("utf-8", "replace")
    doc["hidden"] = max(0, len(d.data) - SHOWN_BODY_BYTES)
    return doc


def _static(name: str) -> Response:
    kind = STATIC.get(name)
    if kind is None:
        raise Refused(404, "no such asset")
    data = resources.files("auto_healer.console").joinpath("static", name).read_bytes()
    response = Response(200, data, kind, [("Cache-Control", "public, max-age=3600")])
    response.no_store = False
    return response
