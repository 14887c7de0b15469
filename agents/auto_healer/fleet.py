"""The pager's state shared by every replica: storm grouping and the sent-ledger, in NATS KV.

Each replica's `Pager` keeps its own grouping and ledger (and its own outbox), which are enough
for one process; a fleet would page once per replica. `SharedPages` puts both in the KV bucket
`auto-healer-pages`, so ten replicas page once per problem per window:

- `group.<hash of the dedup key>`: the problem's grouping state (open, first and last page
  time). A replica pages only after writing the new state with compare-and-set on the revision
  it read; the replica that loses the race reads the winner's state and groups its page.
- `sent.<hash of injury id + action>`: written once a page went out (or was queued), read
  before sending, so a redelivery to another replica is a duplicate.

Entries expire with the bucket's max age (a week), like the local ledger's bound. When NATS
itself does not answer, every call says so (`None`) and the pager falls back on its local state
and outbox: after one failure the store is skipped for `RETRY_AFTER_S`, so a NATS outage costs
one timeout, not one per page.
A dry-run opens no `SharedPages`, so it never writes here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from auto_healer.assets import BUCKET_PAGES, open_bucket

log = structlog.get_logger("auto_healer.fleet")
PAGES_TTL_S = 7 * 86400.0
RETRY_AFTER_S = 10.0
State = dict[str, Any]  # {"open": bool, "first": float, "last": float}


def _key(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kind}.{digest[:40]}"


@dataclass(frozen=True)
class Claim:
    """A group state this replica wrote (it pages), to undo if the page cannot be delivered."""

    key: str
    revision: int
    before: State | None


async def open_pages_bucket(js: Any, *, replicas: int = 1) -> Any:
    """The shared pager bucket, created with `replicas` when missing."""
    return await open_bucket(js, BUCKET_PAGES, ttl_s=PAGES_TTL_S, replicas=replicas)


async def open_shared_pages(nc: Any, *, replicas: int = 1) -> SharedPages | None:
    """`SharedPages` on this connection, or None (local grouping only) without JetStream."""
    try:
        return SharedPages(await open_pages_bucket(nc.jetstream(), replicas=replicas))
    except Exception as exc:
        log.warning("shared_pages_unavailable", error=str(exc) or type(exc).__name__)
        return None


class SharedPages:
    """Grouping state and sent-ledger of pages in one KV bucket (see the module docstring)."""

    def __init__(self, kv: Any, *, attempts: int = 5) -> None:
        self.kv = kv
        self.attempts = attempts  # compare-and-set races lost before giving up on the store
        self._skip_until = 0.0  # monotonic: the store failed lately, don't wait on it again

    @property
    def skipped(self) -> bool:
        return time.monotonic() < self._skip_until

    async def was_sent(self, injury_id: str, action: str) -> bool | None:
        """Whether any replica sent (or queued) this page already; None: store unavailable."""
        from nats.js.errors import KeyNotFoundError

        if self.skipped:
            return None
        try:
            await self.kv.get(_key("sent", injury_id, action))
        except KeyNotFoundError:
            return False
        except Exception as exc:
            self._unavailable("read the sent-ledger", exc)
            return None
        return True

    async def record_sent(self, injury_id: str, action: str) -> None:
        """Remember for every replica that this page went out (best effort)."""
        if self.skipped:
            return
        try:
            await self.kv.put(_key("sent", injury_id, action), b"1")
        except Exception as exc:
            self._unavailable("write the sent-ledger", exc)

    async def claim(
        self, dedup_key: str, advance: Callable[[State | None], State | None]
    ) -> Claim | bool | None:
        """Move a problem's shared state by `advance` (None from it: this page is grouped).

        Returns the `Claim` when this replica wrote the new state (and so pages), False when
        the page is grouped, None when the store does not answer.
        """
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        key = _key("group", dedup_key)
        if self.skipped:
            return None
        for _ in range(self.attempts):
            try:
                try:
                    entry = await self.kv.get(key)
                    before, revision = json.loads(entry.value or b"null"), entry.revision
                except KeyNotFoundError:
                    before, revision = None, 0
                after = advance(before)
                if after is None:
                    return False
                data = json.dumps(after).encode()
                if revision:
                    written = await self.kv.update(key, data, last=revision)
                else:
                    written = await self.kv.create(key, data)
                return Claim(key, written, before)
            except KeyWrongLastSequenceError:
                continue  # another replica moved it first: decide again on its state
            except Exception as exc:
                self._unavailable("claim a page group", exc)
                return None
        return None

    async def undo(self, claim: Claim) -> None:
        """Put the state back as it was (the page was not delivered and will come again)."""
        try:
            if claim.before is None:
                await self.kv.delete(claim.key, last=claim.revision)
            else:
                await self.kv.update(
                    claim.key, json.dumps(claim.before).encode(), last=claim.revision
                )
        except Exception as exc:  # moved on since, or down: grouping may hold it a while
            self._unavailable("undo a page group", exc)

    def _unavailable(self, doing: str, exc: Exception) -> None:
        self._skip_until = time.monotonic() + RETRY_AFTER_S
        log.warning("shared_pages_store_failed", doing=doing, error=str(exc) or type(exc).__name__)
