"""One retry policy for everything that retries: heals, pages, publishes and redeliveries.

A `RetryPolicy` is attempts plus an exponential backoff with a cap; `retrying()` builds the
tenacity loop (full jitter of up to one `backoff_s` on top, so replicas do not retry in step),
and `delay_s()` gives the plain backoff of an attempt for a transport's own redelivery.
What counts as transient stays with the caller: each passes its own allow-list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.retry import retry_base
from tenacity.wait import wait_base


class RetryPolicy(BaseModel):
    """How often and how patiently to retry transient failures (jittered exponential backoff)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=3, ge=1, le=100)
    backoff_s: float = Field(default=0.5, ge=0, le=600)
    max_backoff_s: float = Field(default=10.0, ge=0, le=3600)

    def delay_s(self, attempt: int) -> float:
        """The backoff before retry number `attempt` (1-based): doubling, capped, no jitter."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** max(0, attempt - 1)))

    def wait(self) -> wait_base:
        """tenacity's wait: exponential from `backoff_s`, capped, plus up to `backoff_s` jitter."""
        exponential = wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
        return exponential + wait_random(0, self.backoff_s)

    def retrying(
        self,
        retry: retry_base,
        *,
        wait: Callable[[RetryCallState], float] | None = None,
        before_sleep: Callable[[RetryCallState], Any] | None = None,
        attempts: int | None = None,
    ) -> AsyncRetrying:
        """An `AsyncRetrying` loop of this policy; `retry` is the caller's transient allow-list."""
        options: dict[str, Any] = {}
        if before_sleep is not None:
            options["before_sleep"] = before_sleep
        return AsyncRetrying(
            retry=retry,
            stop=stop_after_attempt(attempts or self.attempts),
            wait=wait or self.wait(),
            reraise=True,
            **options,
        )
