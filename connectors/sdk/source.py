"""The Source base: a connector that brings records into Tessera.

A source reads records from somewhere (a file, a CRM) page by page, from a cursor it
returns with each page, and turns each record into a Segment-style ``identify`` call.
The platform sends those through the gateway's path, like any tracked event, and keeps
the cursor so that the next pull starts where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from marshmallow import Schema

from connectors.sdk.destination import CredentialStore, InMemoryCredentials

__all__ = ["Page", "Source"]


@dataclass(frozen=True)
class Page:
    """Calls for the gateway (``identify`` dicts), and where the next pull starts."""

    calls: list[dict[str, Any]]
    cursor: str | None
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"record", "reason"}


class Source:
    name: ClassVar[str]
    config_schema: ClassVar[type[Schema]]
    # Config fields the vendor may replace at run time (a rotated OAuth refresh token), as
    # for destinations: ``credentials.get(name)`` answers the latest value (the config's,
    # seeded from the environment, until one is ``put``); ``tessera pull`` gives the
    # source a store that keeps what is put encrypted, so it survives the next run.
    runtime_credentials: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.credentials: CredentialStore = InMemoryCredentials(config)

    def check(self) -> None:
        """Raise ValueError (naming the field) if the config cannot work."""

    def pull(self, cursor: str | None) -> Iterator[Page]:
        """Pages of calls changed after ``cursor`` (None: from the beginning)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""
