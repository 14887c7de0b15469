"""Escalation to a human: PagerDuty Events v2 or a generic JSON webhook, once per problem.

`Pager.notify()` turns an outcome and its `PageAction` into one request (its body is
`pagebody`'s). One problem (injury type + affected path, plus the repository when known) is one
`dedup_key`: repeats are grouped (storm grouping, re-paged only after the repeat interval) and a
later heal resolves it. Delivery (retries, durable outbox, no duplicates) is `outbox.Courier`'s.
With `fleet.SharedPages`, the grouping and the sent-ledger are shared by every replica through
NATS KV (one page per problem across the fleet); the local state stays the fallback.
The routing key is never logged nor written to disk; a dry-run sends nothing and keeps the
redacted requests it would send.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import structlog

from auto_healer.decision import PageAction
from auto_healer.errors import ConfigError
from auto_healer.fleet import Claim, SharedPages, State
from auto_healer.logs import REDACTED, mask_url, public_url, redact_url
from auto_healer.outbox import Courier, HttpRequest, PageResult, StoredPage
from auto_healer.outcomes import Outcome
from auto_healer.pagebody import build_body, dedup_key, wire_request
from auto_healer.settings import PagerSettings

__all__ = ["PageResult", "Pager", "dedup_key"]
log = structlog.get_logger("auto_healer.pager")


@dataclass(frozen=True)
class _Group:
    """Storm-grouping state of one dedup key."""

    open: bool
    first_page_s: float
    last_page_s: float
    grouped: int = 0


def _is_http_url(url: str) -> bool:
    """An http(s) URL with a host and a usable port (if it names one)."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 literal
        return False


PLANNED_KEPT = 10_000  # the requests a dry-run keeps to show (memory stays bounded)


class Pager:
    """Decides and sends the pages of outcomes; see the module docstring for the guarantees."""

    def __init__(
        self, settings: PagerSettings, *, dry_run: bool, shared: SharedPages | None = None
    ) -> None:
        url = (settings.webhook_url or "").strip()
        if not _is_http_url(url):
            raise ConfigError(
                f"PAGER_WEBHOOK_URL must be an http(s) URL with a host: {mask_url(url)!r}"
            )
        pagerduty = settings.format == "pagerduty"
        if pagerduty and settings.routing_key is None:
            raise ConfigError("PAGER_FORMAT=pagerduty needs PAGER_ROUTING_KEY")
        self.settings, self.dry_run, self.url = settings, dry_run, url
        self.shared = None if dry_run else shared  # a dry-run writes nothing shared
        self.destination = f"{settings.format} webhook at {public_url(url)}"
        self._routing_key = settings.routing_key if pagerduty else None
        self._planned: list[dict[str, Any]] = []
        self._planned_ids: set[tuple[str, str]] = set()
        self._inflight: set[tuple[str, str]] = set()
        self._groups: dict[str, _Group] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._pruned_at = 0.0  # the first page prunes the state restored from the ledger
        # A dry-run reads and writes no state: it only shows what would be sent.
        self._courier = None if dry_run else Courier(settings, self._wire)
        if self._courier is not None:  # storm grouping survives a restart
            for rec in self._courier.ledger.records.values():
                if rec.status == "sent":
                    self._mark(rec.dedup_key, rec.action, rec.at)
            for page in self._courier.outbox.pending():
                self._mark(page.dedup_key, page.action, page.at)

    @classmethod
    def from_settings(
        cls, settings: PagerSettings, *, dry_run: bool, shared: SharedPages | None = None
    ) -> Pager | None:
        """The pager of these settings, or None when PAGER_WEBHOOK_URL is unset."""
        if not (settings.webhook_url or "").strip():
            return None
        return cls(settings, dry_run=dry_run, shared=shared)

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
        return str(self.settings.outbox_path)

    @property
    def tracked_problems(self) -> int:
        """How many problems (dedup keys) the pager remembers: open ones, and recently resolved."""
        return len(self._groups)

    def planned_requests(self) -> list[dict[str, Any]]:
        """Dry-run: the exact requests that would have been sent, secrets redacted."""
        return list(self._planned)

    async def notify(
        self, outcome: Outcome, action: PageAction, *, repo: str | None = None, durable: bool = True
    ) -> PageResult:
        """Page (trigger or resolve) for one outcome; `PageResult` says what became of it."""
        if action is PageAction.NONE or outcome.injury is None:
            return PageResult.NONE
        inj, repo = outcome.injury.injury, redact_url(repo) if repo else None
        key = dedup_key(inj.injury_type, outcome.injury.problem, repo)
        ident = (outcome.injury.id, action.value)
        # Everything up to the send is decided without an await: concurrent calls see it.
        if self._is_duplicate(ident):
            return PageResult.DUPLICATE
        now = time.time()
        self._prune(now)
        before = self._groups.get(key)
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
                self._planned.append(wire_request(mask_url(self.url), body, key_shown))
            return PageResult.PLANNED
        self._inflight.add(ident)
        try:
            claim = await self._claim_shared(ident, key, action, now)
            if isinstance(claim, PageResult):
                return claim
            async with self._key_locks.setdefault(key, asyncio.Lock()):  # trigger, then resolve
                delivery = await self._courier.deliver(page, durable=durable)
            await self._settle_shared(ident, claim, delivery)
        finally:
            self._inflight.discard(ident)
        if delivery is PageResult.UNDELIVERED and self._groups.get(key) is mine:
            # The caller naks: the redelivery must page, not be grouped.
            if before is None:
                del self._groups[key]
            else:
                self._groups[key] = before
        return delivery

    async def _claim_shared(
        self, ident: tuple[str, str], key: str, action: PageAction, now: float
    ) -> Claim | PageResult | None:
        """Ask the fleet's shared state: a duplicate, grouped, or this replica pages (its
        `Claim`, or None when the store does not answer: the local decision stands)."""
        if self.shared is None:
            return None
        if await self.shared.was_sent(*ident):
            return PageResult.DUPLICATE

        def advance(state: State | None) -> State | None:
            group = None if state is None else _Group(state["open"], state["first"], state["last"])
            if self._suppressed(group, action, now):
                return None
            new = _advance(group, action.value, now)
            return {"open": new.open, "first": new.first_page_s, "last": new.last_page_s}

        claim = await self.shared.claim(key, advance)
        if claim is False:
            log.info("page_grouped", dedup_key=key, action=action.value, fleet=True)
            return PageResult.GROUPED
        return claim if isinstance(claim, Claim) else None

    async def _settle_shared(
        self, ident: tuple[str, str], claim: Claim | None, delivery: PageResult
    ) -> None:
        """Record a page that went out (or waits in our outbox); undo a claim not delivered."""
        if self.shared is None:
            return
        if delivery is PageResult.UNDELIVERED:
            if claim is not None:
                await self.shared.undo(claim)
        else:
            await self.shared.record_sent(*ident)

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
            now - group.first_page_s < s.group_window_s
            or now - group.last_page_s < s.repeat_interval_s
        )

    def _prune(self, now: float) -> None:
        """Forget resolved problems older than the window and repeat interval (bounded memory).

        Such a group groups nothing any more; only a repeated resolve would still be suppressed,
        and PagerDuty ignores a resolve of a resolved incident. Open problems are all kept.
        """
        age = max(self.settings.group_window_s, self.settings.repeat_interval_s)
        if now - self._pruned_at < age:
            return
        self._pruned_at = now
        for key, g in list(self._groups.items()):
            if not g.open and now - g.last_page_s >= age:
                del self._groups[key]
        for key, lock in list(self._key_locks.items()):
            if key not in self._groups and not lock.locked():
                del self._key_locks[key]

    def _mark(self, key: str, action: str, at: float) -> _Group:
        """Record that a page for `key` went out (or was queued) at `at`."""
        new = _advance(self._groups.get(key), action, at)
        self._groups[key] = new
        return new


def _advance(g: _Group | None, action: str, at: float) -> _Group:
    """A problem's grouping state once a page (`trigger` or `resolve`) went out at `at`."""
    if action == "resolve":
        return _Group(False, at, at)
    if g is not None and g.open:
        return _Group(True, g.first_page_s, at)
    return _Group(True, at, at)
