"""The gateway's OpenAPI 3 description, built from its routes (every `@api` entrypoint,
with its permission) and, for request bodies, from the marshmallow schemas that judge
them (through apispec's marshmallow plugin).

Served at `GET /openapi.json`; the schemathesis test fuzzes the gateway from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from services.gateway.access import Permission
from services.gateway.schemas import (
    AliasSchema,
    ConsentRequestSchema,
    GroupSchema,
    IdentifySchema,
    PageSchema,
    ScreenSchema,
    TrackSchema,
)

VERSION = "1"
_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")
EVENT_SCHEMAS = {"Identify": IdentifySchema, "Track": TrackSchema, "Page": PageSchema,
                 "Screen": ScreenSchema, "Group": GroupSchema, "Alias": AliasSchema}
_ERROR = {"$ref": "#/components/schemas/Error"}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_ERRORS = {"400": "bad request (the message names the field and the rule)",
           "404": "not found", "409": "conflict", "413": "body too large",
           "503": "a service did not answer in time"}
# Request bodies of routes whose body is described; other writes take a JSON object.
_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/batch"): {"$ref": "#/components/schemas/Batch"},
    ("post", "/v1/{kind}"): {"$ref": "#/components/schemas/Event"},
    ("post", "/v1/consent"): {"$ref": "#/components/schemas/ConsentRequest"},
    ("post", "/v1/write-keys"): {"type": "object", "required": ["source"],
                                 "properties": {"source": {"type": "string"}}},
    ("post", "/v1/tokens"): {"type": "object", "required": ["name", "role"],
                             "properties": {"name": {"type": "string"},
                                            "role": {"type": "string",
                                                     "enum": ["admin", "marketer",
                                                              "compliance"]}}},
    ("post", "/u/{token}"): None,  # form-encoded, RFC 8058
}
_QUERY = {
    "/v1/profiles": ["userId", "email", "anonymousId", "phone"],
    "/v1/rejections": ["limit", "source"],
    "/v1/profiles/{profile_id}/events": ["limit"],
    "/v1/segments/{name}/members": ["limit", "after"],
    "/v1/identity/review": ["status"],
    "/v1/contacts": ["identifier", "email", "name", "account", "owner", "stage", "limit"],
    "/v1/accounts": ["name"],
}


def openapi_path(url: str) -> str:
    return _PARAMETER.sub(r"{\1}", url)


def openapi_description(routes: Iterable[Any]) -> dict[str, Any]:
    spec = APISpec(title="Tessera", version=VERSION, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()])
    _components(spec)
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: (r.url, r.method)):
        path = openapi_path(route.url)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, path)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _components(spec: APISpec) -> None:
    for name, schema in EVENT_SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    spec.components.schema("ConsentRequest", schema=ConsentRequestSchema)
    spec.components.schema("Event", {"oneOf": [
        {"$ref": f"#/components/schemas/{name}"} for name in EVENT_SCHEMAS]})
    spec.components.schema("Batch", {
        "type": "object", "required": ["batch"],
        "properties": {"batch": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                       "sentAt": {"type": "string", "format": "date-time"},
                       "context": _ANY_OBJECT, "integrations": _ANY_OBJECT,
                       "writeKey": {"type": "string"}}})
    spec.components.schema("Error", {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}})
    spec.components.security_scheme("writeKey", {"type": "http", "scheme": "basic",
                                                  "description": "the write key as user"})
    spec.components.security_scheme("apiToken", {"type": "http", "scheme": "bearer"})


def _operation(route: Any, path: str) -> dict[str, Any]:
    method = route.method.lower()
    operation: dict[str, Any] = {
        "operationId": route.handler,
        "x-permission": str(route.permission),
        "parameters": [{"name": name, "in": "path", "required": True,
                        "schema": {"type": "string"}}
                       for name in re.findall(r"{(\w+)}", path)]
                      + [{"name": name, "in": "query", "required": False,
                          "schema": {"type": "string"}} for name in _QUERY.get(path, ())
                         if method == "get"],
        "responses": {"200": {"description": "done", "content": {
            "application/json": {"schema": _ANY_OBJECT}}}}
        | {status: {"description": what, "content": {"application/json": {"schema": _ERROR}}}
           for status, what in _ERRORS.items()},
    }
    if route.permission is Permission.TRACK:
        operation["security"] = [{"writeKey": []}]
        operation["responses"]["429"] = {"description": "rate limited (see Retry-After)"}
    elif route.permission is not Permission.PUBLIC:
        operation["security"] = [{"apiToken": []}]
        operation["responses"]["403"] = {"description": f"the role lacks {route.permission}"}
    else:
        operation["security"] = []
    if route.permission is not Permission.PUBLIC:
        operation["responses"]["401"] = {"description": "missing, unknown or revoked credential"}
    if method in ("post", "put", "patch"):
        body = _BODIES.get((method, path), _ANY_OBJECT)
        if body is not None:
            operation["requestBody"] = {"required": False, "content": {
                "application/json": {"schema": body}}}
    if method == "post" and route.permission is not Permission.PUBLIC:
        operation["responses"]["201"] = {"description": "created"}
        operation["responses"]["202"] = {"description": "accepted"}
    return operation
