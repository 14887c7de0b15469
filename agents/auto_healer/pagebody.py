"""What a page says: the PagerDuty Events v2 or generic JSON body, its dedup key, its request.

Bodies are built as plain Python values, never through pydantic's JSON mode (which fails on a
lone surrogate in a `str` field and mangles one in a dict key), so any string an injury carries
reaches the outbox and the wire unchanged.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from auto_healer import __version__
from auto_healer.contracts import Severity
from auto_healer.decision import PageAction
from auto_healer.errors import InjuryRejected
from auto_healer.outbox import HttpRequest
from auto_healer.outcomes import Outcome
from auto_healer.paths import normalise
from auto_healer.settings import PagerSettings

SUMMARY_MAX_CHARS = 1024
DEDUP_KEY_MAX_CHARS = 255
PD_SEVERITY = {
    Severity.CRITICAL: "critical",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "info",
}


class PagerDutyPayload(BaseModel):
    """The `payload` of a PagerDuty Events API v2 trigger."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    summary: str  # capped by `build_body`: a length constraint would reject a lone surrogate
    source: str
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: str
    component: str
    group: str
    class_: str = Field(alias="class")
    custom_details: dict[str, Any]


class Link(BaseModel):
    href: str
    text: str


class PagerDutyEvent(BaseModel):
    """A PagerDuty Events API v2 event, without its routing key (added only on the wire)."""

    event_action: Literal["trigger", "resolve"]
    dedup_key: str = Field(min_length=1, max_length=DEDUP_KEY_MAX_CHARS)
    payload: PagerDutyPayload | None = None
    links: list[Link] = Field(default_factory=list)


class Details(BaseModel):
    """What a human needs to act: PagerDuty's `custom_details`, the body of `generic`."""

    injury_id: str
    outcome: str
    reason: str
    playbook: str | None
    attempts: int
    repo: str | None
    grouped_count: int  # identical triggers folded into this page since the previous one
    injury: dict[str, Any]


class GenericEvent(Details):
    """The `generic` format: one JSON document with the injury, its id, reason and outcome."""

    event_action: Literal["trigger", "resolve"]
    dedup_key: str
    severity: str
    timestamp: str


def dedup_key(injury_type: str, affected_path: str, repo: str | None) -> str:
    """One key per problem: injury type + affected path (+ repo), hashed only if too long."""
    try:
        path = normalise(affected_path)  # `./a//b/` and `a/b` are one problem
    except InjuryRejected:
        path = affected_path.strip("/")  # an unsafe path is still paged, as it came
    key = ":".join(["auto-healer", *([repo] if repo else []), injury_type, path])
    if len(key) <= DEDUP_KEY_MAX_CHARS:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key[:190] + "…sha256:" + digest[:32]


def wire_request(url: str, body: dict[str, Any], routing_key: str | None) -> HttpRequest:
    """The HTTP request of a page; the routing key (PagerDuty only) goes first in the body."""
    doc = body if routing_key is None else {"routing_key": routing_key, **body}
    headers = {"Content-Type": "application/json", "User-Agent": f"auto-healer/{__version__}"}
    return {"method": "POST", "url": url, "headers": headers, "json": doc}


def build_body(
    settings: PagerSettings,
    outcome: Outcome,
    action: PageAction,
    key: str,
    repo: str | None,
    grouped: int,
) -> dict[str, Any]:
    """The request body of a page, without the routing key, in the configured format."""
    assert outcome.injury is not None
    parsed, inj = outcome.injury, outcome.injury.injury
    # A payload timestamp of another clock (bee-keeper's monotonic one) is not a date.
    when = datetime.fromtimestamp(parsed.when, UTC).isoformat(timespec="milliseconds")
    act: Literal["trigger", "resolve"] = "resolve" if action is PageAction.RESOLVE else "trigger"
    details = Details(
        injury_id=parsed.id,
        outcome=outcome.kind.value,
        reason=outcome.reason,
        playbook=outcome.playbook,
        attempts=outcome.attempts,
        repo=repo,
        grouped_count=grouped,
        injury=parsed.raw,
    )
    if settings.format == "generic":
        return GenericEvent(
            event_action=act,
            dedup_key=key,
            severity=inj.severity.value,
            timestamp=when,
            **details.model_dump(),
        ).model_dump()
    if action is PageAction.RESOLVE:  # PagerDuty needs only the key to resolve
        return PagerDutyEvent(event_action=act, dedup_key=key).model_dump(
            exclude={"payload", "links"}
        )
    if inj.description is not None:  # free text: the text is what a human must read
        by = f"{inj.source}, " if inj.source else ""
        what = f"{inj.description} ({by}{inj.severity.value})"
    else:
        what = f"{inj.injury_type} at {inj.affected_path} ({inj.severity.value})"
    summary = f"auto-healer {outcome.kind.value}: {what}: {outcome.reason}"
    if len(summary) > SUMMARY_MAX_CHARS:
        summary = summary[: SUMMARY_MAX_CHARS - 1] + "…"
    payload = PagerDutyPayload(
        summary=summary,
        source=settings.source,
        severity=PD_SEVERITY[inj.severity],
        timestamp=when,
        component=inj.affected_path,
        class_=inj.injury_type,
        group=repo or inj.affected_path.strip("/").split("/")[0] or "/",
        custom_details=details.model_dump(),
    )
    links = [Link(href=repo, text="repository")] if repo and repo.startswith("http") else []
    event = PagerDutyEvent(event_action=act, dedup_key=key, payload=payload, links=links)
    return event.model_dump(by_alias=True, exclude=None if links else {"links"})
