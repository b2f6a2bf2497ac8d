"""Retrying a connector's send: exponential backoff, full jitter, ``Retry-After`` honoured."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from connectors.base import Connector, DeliveryError, DeliveryItem, SendResult

__all__ = ["backoff_wait", "call_with_retries", "send_with_retries"]

log = logging.getLogger(__name__)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.retryable


def backoff_wait(base: float, cap: float) -> Callable[[RetryCallState], float]:
    """Full-jitter backoff (uniform in [0, min(cap, base * 2**(n-1))]), but never less
    than the ``retry_after`` the last error asked for."""
    jitter = wait_random_exponential(multiplier=base, max=cap)

    def wait(state: RetryCallState) -> float:
        backoff = jitter(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(retry_after, backoff) if retry_after is not None else backoff

    return wait


def _log_retry(destination: str, attempts: int) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info(
            "delivery to %s failed (attempt %d/%d), retrying in %.2fs: %s",
            destination,
            state.attempt_number,
            attempts,
            wait,
            exc,
        )

    return before_sleep


def send_with_retries(
    connector: Connector,
    destination: str,
    items: list[DeliveryItem],
    *,
    attempts: int = 5,
    base: float = 0.2,
    cap: float = 30.0,
    sleep: Callable[[float], None] | None = None,
) -> SendResult:
    """``connector.send(destination, items)``, retried while the error is retryable.

    At most ``attempts`` sends. Between them waits ``max(retry_after, backoff)``, where
    backoff is full jitter over ``base * 2**(n-1)`` capped at ``cap`` (``retry_after``
    itself is not capped: the destination asked for it). A permanent error, or the last
    transient one once the budget is spent, is raised as is, so the caller can
    dead-letter the batch. ``sleep`` defaults to ``time.sleep`` looked up at call time
    (eventlet's green sleep once monkey-patched); tests inject a recorder.
    """
    return call_with_retries(lambda: connector.send(destination, items), destination,
                             attempts=attempts, base=base, cap=cap, sleep=sleep)


def call_with_retries(
    call: Callable[[], SendResult],
    destination: str,
    *,
    attempts: int = 5,
    base: float = 0.2,
    cap: float = 30.0,
    sleep: Callable[[float], None] | None = None,
) -> SendResult:
    """``call()`` retried as :func:`send_with_retries` describes."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=backoff_wait(base, cap),
        retry=retry_if_exception(_is_retryable),
        sleep=sleep if sleep is not None else time.sleep,
        before_sleep=_log_retry(destination, attempts),
        reraise=True,
    )
    return retrying(call)
