"""One retry policy for everything that retries: heals, pages, publishes and redeliveries.

A `RetryPolicy` is attempts plus an exponential backoff with a cap; `retrying()` builds the
tenacity loop (full jitter of up to one `backoff_s` on top, so replicas do not retry in step),
and `delay_s()` gives the plain backoff of an attempt for a transport's own redelivery.
What counts as transient stays with the caller: each passes its own allow-list.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    AttemptManager,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
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
        return _wait(self.backoff_s, self.max_backoff_s)

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
        return FirstAttemptFree(
            retry=retry,
            stop=_stop(attempts or self.attempts),
            wait=wait or self.wait(),
            reraise=True,
            **options,
        )


@lru_cache(maxsize=256)
def _wait(backoff_s: float, max_backoff_s: float) -> wait_base:
    """Built once per policy (tenacity's waits and stops hold no state of a run)."""
    return wait_exponential(multiplier=backoff_s, max=max_backoff_s) + wait_random(0, backoff_s)


@lru_cache(maxsize=256)
def _stop(attempts: int) -> stop_base:
    return stop_after_attempt(attempts)


class FirstAttemptFree(AsyncRetrying):
    """tenacity's loop, minus its machinery for the first attempt and for a first success.

    tenacity evaluates a chain of actions (wrapping each callback, inspecting whether it is a
    coroutine) before every attempt and after every outcome. Before the first attempt that
    chain only says "attempt" (no `before` callback is ever set here), and after a success it
    only returns, when the retry condition looks at exceptions alone: both are done directly.
    Anything else (a failure, a `retry` that looks at results) goes through tenacity as ever.
    """

    _first: bool

    def __aiter__(self) -> AsyncRetrying:
        self._first = True
        return super().__aiter__()

    async def __anext__(self) -> AttemptManager:
        state = self._retry_state
        if self._first and self.enabled:
            self._first = False
            return AttemptManager(retry_state=state)
        outcome = state.outcome
        if (
            outcome is not None
            and not outcome.failed
            and state.attempt_number == 1
            and type(self.retry) is retry_if_exception_type
        ):
            raise StopAsyncIteration
        return await super().__anext__()
