"""Escalation to a human: PagerDuty Events v2 or a generic JSON webhook, once per problem.

`Pager.notify()` turns an outcome and its `PageAction` into one request. One problem (injury
type + affected path, plus the repository when known) is one `dedup_key`: repeats are grouped
(storm grouping, re-paged only after the repeat interval) and a later heal resolves it. Delivery
(retries, durable outbox, no duplicates) is `outbox.Courier`'s. The routing key is never logged
nor written to disk; a dry-run sends nothing and keeps the redacted requests it would send.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import structlog
from pydantic import BaseModel, ConfigDict, Field

from auto_healer import __version__
from auto_healer.contracts import Severity
from auto_healer.decision import PageAction
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.outbox import Courier, HttpRequest, PageResult, StoredPage
from auto_healer.outcomes import Outcome
from auto_healer.paths import normalise
from auto_healer.settings import Settings

__all__ = ["PageResult", "Pager", "dedup_key"]
log = structlog.get_logger("auto_healer.pager")

REDACTED = "**********"
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

    summary: str = Field(min_length=1, max_length=SUMMARY_MAX_CHARS)
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


@dataclass(frozen=True)
class _Group:
    """Storm-grouping state of one dedup key."""

    open: bool
    first_page_s: float
    last_page_s: float
    grouped: int = 0


def dedup_key(injury_type: str, affected_path: str, repo: str | None) -> str:
    """One key per problem: injury type + affected path (+ repo), hashed only if too long."""
    try:
        path = normalise(affected_path)  # `./a//b/` and `a/b` are one problem
    except InjuryRejected:
        path = affected_path.strip("/")  # an unsafe path is still paged, as it came
    key = ":".join(["auto-healer", *([repo] if repo else []), injury_type, path])
    if len(key) <= DEDUP_KEY_MAX_CHARS:
        return key
    return key[:190] + "…sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def public_url(url: str) -> str:
    """A URL with credentials, path and query removed: safe to log and to put in reports."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def _redact_url(url: str) -> str:
    """The URL with its password and query values replaced by `REDACTED`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
    query = "&".join(f"{kv.split('=', 1)[0]}={REDACTED}" for kv in parts.query.split("&") if kv)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _clean_repo(repo: str | None) -> str | None:
    """A repository URL without the user:token part some remotes carry."""
    if not repo:
        return None
    parts = urlsplit(repo)
    if parts.scheme and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return urlunsplit(parts)


def wire_request(url: str, body: dict[str, Any], routing_key: str | None) -> HttpRequest:
    """The HTTP request of a page; the routing key (PagerDuty only) goes first in the body."""
    doc = body if routing_key is None else {"routing_key": routing_key, **body}
    headers = {"Content-Type": "application/json", "User-Agent": f"auto-healer/{__version__}"}
    return {"method": "POST", "url": url, "headers": headers, "json": doc}


def build_body(
    settings: Settings,
    outcome: Outcome,
    action: PageAction,
    key: str,
    repo: str | None,
    grouped: int,
) -> dict[str, Any]:
    """The request body of a page, without the routing key, in the configured format."""
    assert outcome.injury is not None
    parsed, inj = outcome.injury, outcome.injury.injury
    when = datetime.fromtimestamp(inj.timestamp, UTC).isoformat(timespec="milliseconds")
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
    if settings.pager_format == "generic":
        return GenericEvent(
            event_action=act,
            dedup_key=key,
            severity=inj.severity.value,
            timestamp=when,
            **details.model_dump(),
        ).model_dump(mode="json")
    if action is PageAction.RESOLVE:  # PagerDuty needs only the key to resolve
        return PagerDutyEvent(event_action=act, dedup_key=key).model_dump(
            mode="json", exclude={"payload", "links"}
        )
    summary = (
        f"auto-healer {outcome.kind.value}: {inj.injury_type} at {inj.affected_path} "
        f"({inj.severity.value}): {outcome.reason}"
    )
    if len(summary) > SUMMARY_MAX_CHARS:
        summary = summary[: SUMMARY_MAX_CHARS - 1] + "…"
    payload = PagerDutyPayload(
        summary=summary,
        source=settings.pager_source,
        severity=PD_SEVERITY[inj.severity],
        timestamp=when,
        component=inj.affected_path,
        class_=inj.injury_type,
        group=repo or inj.affected_path.strip("/").split("/")[0] or "/",
        custom_details=details.model_dump(mode="json"),
    )
    links = [Link(href=repo, text="repository")] if repo and repo.startswith("http") else []
    event = PagerDutyEvent(event_action=act, dedup_key=key, payload=payload, links=links)
    return event.model_dump(mode="json", by_alias=True, exclude=None if links else {"links"})


PLANNED_KEPT = 10_000  # the requests a dry-run keeps to show (memory stays bounded)


class Pager:
    """Decides and sends the pages of outcomes; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, *, dry_run: bool) -> None:
        url = (settings.pager_webhook_url or "").strip()
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(
                f"PAGER_WEBHOOK_URL must be an http(s) URL with a host: {_redact_url(url)!r}"
            )
        pagerduty = settings.pager_format == "pagerduty"
        if pagerduty and settings.pager_routing_key is None:
            raise ConfigError("PAGER_FORMAT=pagerduty needs PAGER_ROUTING_KEY")
        self.settings, self.dry_run, self.url = settings, dry_run, url
        self.destination = f"{settings.pager_format} webhook at {public_url(url)}"
        self._routing_key = settings.pager_routing_key if pagerduty else None
        self._planned: list[dict[str, Any]] = []
        self._planned_ids: set[tuple[str, str]] = set()
        self._inflight: set[tuple[str, str]] = set()
        self._groups: dict[str, _Group] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        # A dry-run reads and writes no state: it only shows what would be sent.
        self._courier = None if dry_run else Courier(settings, self._wire)
        if self._courier is not None:  # storm grouping survives a restart
            for rec in self._courier.ledger.records.values():
                if rec.status == "sent":
                    self._mark(rec.dedup_key, rec.action, rec.at)
            for page in self._courier.outbox.pending():
                self._mark(page.dedup_key, page.action, page.at)

    @classmethod
    def from_settings(cls, settings: Settings, *, dry_run: bool) -> Pager | None:
        """The pager of these settings, or None when PAGER_WEBHOOK_URL is unset."""
        if not (settings.pager_webhook_url or "").strip():
            return None
        return cls(settings, dry_run=dry_run)

    async def start(self) -> None:
        """Start the background task that drains the outbox (nothing to do in dry-run)."""
        if self._courier is not None:
            await self._courier.start()
            log.info("pager_started", destination=self.destination, pending=self.pending)

    async def aclose(self) -> None:
        """Stop the drainer and close the HTTP client; waiting pages stay in the outbox."""
        if self._courier is not None:
            await self._courier.aclose()

    async def flush(self) -> bool:
        """Try every page waiting in the outbox once; True when none is left."""
        return True if self._courier is None else await self._courier.flush()

    @property
    def pending(self) -> int:
        """How many pages wait in the outbox."""
        return 0 if self._courier is None else len(self._courier.outbox)

    @property
    def state_path(self) -> str:
        """The outbox file (the ledger and dead letters are beside it)."""
        return str(self.settings.pager_outbox_path)

    def planned_requests(self) -> list[dict[str, Any]]:
        """Dry-run: the exact requests that would have been sent, secrets redacted."""
        return list(self._planned)

    async def notify(
        self, outcome: Outcome, action: PageAction, *, repo: str | None = None, durable: bool = True
    ) -> PageResult:
        """Page (trigger or resolve) for one outcome; `PageResult` says what became of it."""
        if action is PageAction.NONE or outcome.injury is None:
            return PageResult.NONE
        inj, repo = outcome.injury.injury, _clean_repo(repo)
        key = dedup_key(inj.injury_type, inj.affected_path, repo)
        ident = (outcome.injury.id, action.value)
        # Everything up to the send is decided without an await: concurrent calls see it.
        if self._is_duplicate(ident):
            return PageResult.DUPLICATE
        before, now = self._groups.get(key), time.time()
        if self._suppressed(before, action, now):
            if before is not None and action is PageAction.TRIGGER:
                self._groups[key] = replace(before, grouped=before.grouped + 1)
            log.info("page_grouped", dedup_key=key, action=action.value)
            return PageResult.GROUPED
        body = build_body(
            self.settings, outcome, action, key, repo, before.grouped if before else 0
        )
        page = StoredPage(injury_id=ident[0], action=action.value, dedup_key=key, body=body, at=now)
        mine = self._mark(key, action.value, now)
        if self._courier is None:  # a long dry-run agent keeps the first plans only
            if len(self._planned) < PLANNED_KEPT:
                self._planned_ids.add(ident)
                key_shown = REDACTED if self._routing_key else None
                self._planned.append(wire_request(_redact_url(self.url), body, key_shown))
            return PageResult.PLANNED
        self._inflight.add(ident)
        try:
            async with self._key_locks.setdefault(key, asyncio.Lock()):  # trigger, then resolve
                delivery = await self._courier.deliver(page, durable=durable)
        finally:
            self._inflight.discard(ident)
        if delivery is PageResult.UNDELIVERED and self._groups.get(key) is mine:
            # The caller naks: the redelivery must page, not be grouped.
            if before is None:
                del self._groups[key]
            else:
                self._groups[key] = before
        return delivery

    def _wire(self, page: StoredPage) -> HttpRequest:
        key = self._routing_key.get_secret_value() if self._routing_key else None
        return wire_request(self.url, page.body, key)

    def _is_duplicate(self, ident: tuple[str, str]) -> bool:
        if ident in self._inflight or ident in self._planned_ids:
            return True
        c = self._courier
        return c is not None and (ident in c.ledger.records or ident in c.outbox)

    def _suppressed(self, group: _Group | None, action: PageAction, now: float) -> bool:
        if group is None:
            return False
        if action is PageAction.RESOLVE:
            return not group.open  # nothing open for this key: already resolved
        s = self.settings
        return group.open and (
            now - group.first_page_s < s.pager_group_window_s
            or now - group.last_page_s < s.pager_repeat_interval_s
        )

    def _mark(self, key: str, action: str, at: float) -> _Group:
        """Record that a page for `key` went out (or was queued) at `at`."""
        g = self._groups.get(key)
        if action == "resolve":
            new = _Group(False, at, at)
        elif g is not None and g.open:
            new = _Group(True, g.first_page_s, at)
        else:
            new = _Group(True, at, at)
        self._groups[key] = new
        return new
