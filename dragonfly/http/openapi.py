"""The OpenAPI 3 document, generated from the declared routes."""

from __future__ import annotations

from typing import Any

from dragonfly import __version__
from dragonfly.http.router import Route

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}, "detail": {}}}


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": route.handler.__name__,
            "x-dragonfly-access": route.access,
            "parameters": [
                {"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                 "description": p.help,
                 "schema": {"type": p.type, **({"enum": list(p.enum)} if p.enum else {})}}
                for p in route.params],
            "responses": {
                str(route.status): {"description": "OK", "content": {
                    route.produces or ("text/event-stream" if route.streaming
                                       else "application/json"): {
                        "schema": {}}}},
                "default": {"description": "Error",
                            "content": {"application/json": {"schema": _ERROR}}},
            },
        }
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": route.body}}}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "Dragonfly API", "version": __version__,
                 "description": "Every call the Dragonfly panel makes. Errors are JSON "
                                "objects with `error` (a sentence) and optional `detail`."},
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR}},
    }
