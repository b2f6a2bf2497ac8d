"""Exceptions that the messaging layer understands, raised by domain code."""

from __future__ import annotations


class RetryLater(Exception):
    """This batch cannot be handled now and it is nobody's fault: hand it back in
    ``retry_after`` seconds, in order, without counting a failure (e.g. a destination
    whose circuit is open). Nothing of it may have been written."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
