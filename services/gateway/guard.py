"""Declaring each public route with its permission, in one line:

    @api("GET", "/v1/segments", Permission.SEGMENTS_READ)
    def list_segments(self, request): ...

`api` registers the nameko `@http` entrypoint and wraps the method so that the
permission is checked (by the service's `_refuse`) before the method runs, on every
request. A route registered with a bare `@http` has no permission: `undeclared_routes`
finds it, the gateway refuses to import (fail closed) and the access-matrix test names it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.web.handlers import HttpRequestHandler, http

from services.gateway.access import Permission


@dataclass(frozen=True)
class Route:
    method: str
    url: str
    handler: str
    permission: Permission | None


def api(method: str, url: str, permission: Permission, *, refuse: str = "_refuse", **options):
    """`refuse` names the service's method that checks access (the console's pages answer
    a refusal with a page, not JSON)."""
    if not isinstance(permission, Permission):
        raise TypeError(f"{method} {url}: permission must be a Permission, not {permission!r}")

    def declare(handler):
        @functools.wraps(handler)
        def guarded(self, request, *args, **kwargs):
            refused = getattr(self, refuse)(request, permission)
            if refused is not None:
                return refused
            return handler(self, request, *args, **kwargs)

        guarded.permission = permission
        return http(method, url, **options)(guarded)

    return declare


def routes(service_cls: type) -> Iterator[Route]:
    """Every HTTP entrypoint of a nameko service class, with its declared permission."""
    for name, member in inspect.getmembers(service_cls, inspect.isfunction):
        for entrypoint in getattr(member, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, HttpRequestHandler):
                yield Route(entrypoint.method, entrypoint.url, name,
                            getattr(member, "permission", None))


def undeclared_routes(service_cls: type) -> list[Route]:
    return [route for route in routes(service_cls) if route.permission is None]


def require_declared_permissions(service_cls: type) -> None:
    missing = undeclared_routes(service_cls)
    if missing:
        raise TypeError("routes without a declared permission (use services.gateway.guard."
                        "api(method, url, Permission.X)): "
                        + ", ".join(f"{r.method} {r.url} ({r.handler})" for r in missing))
