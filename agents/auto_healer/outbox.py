"""PageResult of pages that loses nothing and sends nothing twice.

`Courier` retries transient failures only (429 honouring `Retry-After`, 5xx, timeouts,
connection errors); a refused page (other 4xx) is logged with the answer and dead-lettered. When
the pager stays down, a durable page goes to the outbox, drained in the background and after a
restart. The ledger of (injury id, action) sent keeps any page from going out twice. All three
are append-only JSON Lines files, fsync'd on every write; the outbox is rewritten atomically to
empty once drained. A stored body has no routing key: secrets are added on the wire only, and
what the pager answers is redacted (`logs.redact_secrets`) before it is logged or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from auto_healer.jsonl import append_jsonl, read_jsonl, rewrite_jsonl
from auto_healer.logs import redact_secrets, url_secrets
from auto_healer.retry import RetryPolicy
from auto_healer.settings import PagerSettings
from auto_healer.statelock import StateLock

log = structlog.get_logger("auto_healer.outbox")

Action = Literal["trigger", "resolve"]
HttpRequest = dict[str, Any]  # method, url, headers, json: as shown by a dry-run
Ident = tuple[str, str]  # (injury id, action): a page is sent at most once per ident
LEDGER_KEEP = 50_000
RESPONSE_SHOWN_CHARS = 2000
RESPONSE_READ_CHARS = 64_000  # redacted whole, then cut to RESPONSE_SHOWN_CHARS


class PageResult(StrEnum):
    """What became of one page."""

    SENT = "sent"
    GROUPED = "grouped"  # suppressed by storm grouping / repeat interval
    QUEUED = "queued"  # pager down: written to the durable outbox (core mode)
    UNDELIVERED = "undelivered"  # pager down and durable=False: caller (JetStream) will nak
    DEAD_LETTERED = "dead_lettered"  # non-retryable 4xx: logged with body, dead-letter file
    DUPLICATE = "duplicate"  # this injury id + action was already sent
    PLANNED = "planned"  # dry-run: nothing sent
    NONE = "none"  # PageAction.NONE


class StoredPage(BaseModel):
    """A page as the outbox keeps it (no secrets), or, without its body, as the ledger does."""

    model_config = ConfigDict(frozen=True)

    injury_id: str
    action: Action
    dedup_key: str
    at: float  # when it was queued, sent or dead-lettered (Unix time)
    status: Literal["queued", "sent", "dead_lettered"] = "queued"
    body: dict[str, Any] = Field(default_factory=dict)

    @property
    def ident(self) -> Ident:
        return (self.injury_id, self.action)


def read_pages(path: Path) -> Iterator[StoredPage]:
    """The valid page records of a state file, in order."""
    for doc in read_jsonl(path):
        with contextlib.suppress(ValidationError):
            yield StoredPage.model_validate(doc)


class Outbox:
    """Pages waiting for the pager to come back, in the order they were queued."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: dict[Ident, StoredPage] = {}
        for page in read_pages(path):  # a queued record, later followed by its end record
            if page.status == "queued":
                self._pending.setdefault(page.ident, page)
            else:
                self._pending.pop(page.ident, None)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, ident: object) -> bool:
        return ident in self._pending

    def pending(self) -> list[StoredPage]:
        """A snapshot of the waiting pages, oldest first."""
        return list(self._pending.values())

    def add(self, page: StoredPage) -> None:
        """Queue a page durably (fsync'd before this returns)."""
        if page.ident in self._pending:
            return
        append_jsonl(self.path, [page.model_dump()])
        self._pending[page.ident] = page

    def done(self, record: StoredPage) -> None:
        """Mark a page sent or dead-lettered; compact the file once nothing is pending."""
        if self._pending.pop(record.ident, None) is None:
            return
        if self._pending:
            append_jsonl(self.path, [record.model_dump()])
        else:
            rewrite_jsonl(self.path, [])


class Ledger:
    """Which pages already reached their end, so none is sent twice for the same injury id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[Ident, StoredPage] = {}
        count = 0
        for count, rec in enumerate(read_pages(path), 1):  # noqa: B007 (count is used below)
            self.records.pop(rec.ident, None)  # re-insert: keep file order = time order
            self.records[rec.ident] = rec
        if count > 2 * LEDGER_KEEP:
            self._compact()

    def record(self, page: StoredPage, status: Literal["sent", "dead_lettered"]) -> StoredPage:
        """Remember durably that a page reached its end; returns the record (without body)."""
        rec = page.model_copy(update={"status": status, "at": time.time(), "body": {}})
        append_jsonl(self.path, [rec.model_dump()])
        self.records[rec.ident] = rec
        return rec

    def _compact(self) -> None:
        keep = list(self.records.values())[-LEDGER_KEEP:]
        self.records = {r.ident: r for r in keep}
        rewrite_jsonl(self.path, [r.model_dump() for r in keep])


class _Answered(Exception):
    """The pager answered other than 2xx: 429 and 5xx are transient, other codes refusals."""

    def __init__(self, status: int, body: str, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body, self.retry_after_s = status, body, retry_after_s
        self.transient = status == 429 or status >= 500


def _transient(exc: BaseException | None) -> bool:
    """Worth retrying: 429, 5xx, timeouts and connection errors (httpx.TransportError)."""
    return isinstance(exc, httpx.TransportError) or (isinstance(exc, _Answered) and exc.transient)


def _retry_after(exc: BaseException | None) -> float | None:
    return exc.retry_after_s if isinstance(exc, _Answered) else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date)."""
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, float(value or ""))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, parsedate_to_datetime(value or "").timestamp() - time.time())
    return None


class Courier:
    """Posts pages to one webhook; owns the outbox, the ledger, the dead letters and the drainer.

    A single process must own a state directory: two would both drain the same outbox.
    """

    def __init__(
        self, settings: PagerSettings, request: Callable[[StoredPage], HttpRequest]
    ) -> None:
        self.settings, self._request = settings, request  # `request` adds the secrets
        key = settings.routing_key
        self._secrets = [
            *url_secrets(settings.webhook_url or ""),
            *([key.get_secret_value()] if key else []),
        ]
        state = settings.outbox_path
        self._lock = StateLock(
            state.with_name(".lock"),
            what=f"the pager outbox {state}",
            hint="give each process its own PAGER_OUTBOX_PATH",
        )
        self.outbox = Outbox(state)
        self.ledger = Ledger(state.with_name("sent.jsonl"))
        self.dead_letter_path = state.with_name("dead-letter.jsonl")
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout_s))
        self._drainer: asyncio.Task[None] | None = None
        self._drain_lock = asyncio.Lock()
        self._not_before_s = 0.0  # monotonic; set by a Retry-After the drainer must honour

    async def start(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain_loop(), name="pager-outbox-drainer")

    async def aclose(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        await self._client.aclose()
        self._lock.release()

    async def deliver(self, page: StoredPage, *, durable: bool) -> PageResult:
        """Send with retries; when the pager stays down, queue (durable) or give it back."""
        if durable and len(self.outbox):  # keep the order: queue behind pages still waiting
            self.outbox.add(page)
            return PageResult.QUEUED
        try:
            async for attempt in self._retrying():
                with attempt:
                    await self._post(page)
        except (_Answered, httpx.TransportError) as exc:
            if isinstance(exc, _Answered) and not exc.transient:
                self._dead_letter(page, exc)
                return PageResult.DEAD_LETTERED
            log.warning("page_not_delivered", dedup_key=page.dedup_key, **self._failure(exc))
            self._not_before_s = time.monotonic() + (_retry_after(exc) or 0.0)
            if not durable:
                return PageResult.UNDELIVERED
            self.outbox.add(page)
            return PageResult.QUEUED
        self._sent(page)
        return PageResult.SENT

    async def flush(self) -> bool:
        """One pass over the outbox, oldest first, one attempt each; True when it is empty."""
        async with self._drain_lock:
            for page in self.outbox.pending():
                if time.monotonic() < self._not_before_s:
                    return False
                try:
                    await self._post(page)
                except (_Answered, httpx.TransportError) as exc:
                    if isinstance(exc, _Answered) and not exc.transient:
                        self.outbox.done(self._dead_letter(page, exc))
                        continue
                    self._not_before_s = time.monotonic() + (_retry_after(exc) or 0.0)
                    log.info(
                        "outbox_pager_still_down", pending=len(self.outbox), **self._failure(exc)
                    )
                    return False
                self.outbox.done(self._sent(page, from_outbox=True))
            return True

    async def _post(self, page: StoredPage) -> None:
        """One HTTP attempt; raises `_Answered` or `httpx.TransportError` unless 2xx."""
        req = self._request(page)
        resp = await self._client.post(
            req["url"],
            headers=req["headers"],
            # ASCII: a lone surrogate goes out as a (valid) JSON escape, never as bad UTF-8.
            content=json.dumps(req["json"], ensure_ascii=True).encode(),
        )
        if not resp.is_success:
            after = parse_retry_after(resp.headers.get("Retry-After"))
            shown = redact_secrets(resp.text[:RESPONSE_READ_CHARS], self._secrets)
            raise _Answered(resp.status_code, shown[:RESPONSE_SHOWN_CHARS], after)

    def _failure(self, exc: BaseException | None) -> dict[str, Any]:
        """The log fields of a failed attempt: the error and any answer, secrets redacted."""
        error = redact_secrets(str(exc) or type(exc).__name__, self._secrets)
        if isinstance(exc, _Answered):
            return {"error": error, "status": exc.status, "response": exc.body}
        return {"error": error}

    def _log_retry(self, rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        log.warning("page_retry", attempt=rs.attempt_number, **self._failure(exc))

    def _retrying(self) -> AsyncRetrying:
        s = self.settings
        policy = RetryPolicy(
            attempts=s.attempts,
            backoff_s=s.backoff_s,
            max_backoff_s=s.max_backoff_s,
        )
        backoff = policy.wait()

        def retry(exc: BaseException) -> bool:
            # A Retry-After beyond the backoff cap is honoured by the outbox, not by blocking.
            return _transient(exc) and (_retry_after(exc) or 0.0) <= s.max_backoff_s

        def wait(rs: RetryCallState) -> float:
            after = _retry_after(rs.outcome.exception() if rs.outcome else None)
            return backoff(rs) if after is None else after

        return policy.retrying(retry_if_exception(retry), wait=wait, before_sleep=self._log_retry)

    def _sent(self, page: StoredPage, *, from_outbox: bool = False) -> StoredPage:
        record = self.ledger.record(page, "sent")
        log.info("page_sent", dedup_key=page.dedup_key, action=page.action, from_outbox=from_outbox)
        return record

    def _dead_letter(self, page: StoredPage, exc: _Answered) -> StoredPage:
        """Keep a page the pager refused, with its answer, and never send it again."""
        where = str(self.dead_letter_path)
        log.error("page_refused", status=exc.status, response=exc.body, dead_letter=where)
        letter = {"page": page.model_dump(), "status": exc.status, "response": exc.body}
        append_jsonl(self.dead_letter_path, [{**letter, "at": time.time()}])
        return self.ledger.record(page, "dead_lettered")

    async def _drain_loop(self) -> None:
        """Drain the outbox now, then every interval (longer while the pager stays down)."""
        s = self.settings
        delay_s = s.drain_interval_s
        while True:
            try:
                ok = await self.flush()
            except Exception:  # e.g. a full disk must not end the drainer: log, retry later
                log.exception("outbox_drain_error")
                ok = False
            delay_s = s.drain_interval_s if ok else min(delay_s * 2, s.max_backoff_s)
            await asyncio.sleep(max(delay_s, self._not_before_s - time.monotonic()))
