"""Finding connectors: built-ins and plugins, through the ``tessera.connectors`` entry points.

A connector in its own package registers itself in its ``pyproject.toml``::

    [project.entry-points."tessera.connectors"]
    acme = "tessera_acme:AcmeDestination"

and is found by name once installed; nothing in Tessera has to change.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

__all__ = ["ENTRY_POINT_GROUP", "connector_class", "known_connectors", "register_connector"]

ENTRY_POINT_GROUP = "tessera.connectors"

# Registered in this process (tests, embedding code); they win over entry points.
_REGISTERED: dict[str, str | type] = {}


def register_connector(kind: str, connector: str | type) -> None:
    """Make ``kind`` build ``connector`` (a class or "module:Class") in this process."""
    _REGISTERED[kind] = connector


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_connectors() -> list[str]:
    return sorted(set(_entry_points()) | set(_REGISTERED))


def connector_class(kind: str) -> type:
    target = _REGISTERED.get(kind) or _entry_points().get(kind)
    if target is None:
        raise ValueError(
            f"unknown connector kind {kind!r} (known: {', '.join(known_connectors())})")
    if isinstance(target, str):
        module_name, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        _REGISTERED[kind] = target
    return target
