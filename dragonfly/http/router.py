"""Declarative API routes: each handler is registered with its OpenAPI metadata.

Handlers take the request and return plain data (dict/list) or raise a ``DragonflyError``; the
error edge in ``dragonfly.http.errors`` turns both into JSON responses. Because every route is
declared here with its summary, parameters and required role, the OpenAPI document is generated,
never hand-written, and the role-matrix test can walk every route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[Any]]
# What a request would do to the machine named by its ``{id}`` that the molly guard (safety
# mode, node locks) must allow first, e.g. "reimage", "delete", "power off"; None: nothing.
Guard = Callable[[web.Request], "str | None"]
# The access a request needs when it depends on its parameters (a lifecycle action's role).
AccessFor = Callable[[web.Request], str]


@dataclass(frozen=True)
class Param:
    name: str
    where: str = "query"  # "query" or "path"
    type: str = "string"
    help: str = ""
    required: bool = False
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None  # JSON schema of the request body
    # Who may call it. "public": anyone, even before setup; "read": any signed-in role (or
    # anonymous when the front page is open); "user": user or admin; "admin": admins only;
    # "agent": the boot and agent surface, governed by the boot networks instead of logins.
    access: str = "read"
    streaming: bool = False
    status: int = 200
    # Also answer HEAD with the same handler (aiohttp sends no body): clients that ask for a
    # size first, as EDK2's UEFI HTTP boot does for the loader, get 405 without it.
    head: bool = False
    guard: Guard | None = None
    access_for: AccessFor | None = None  # may only tighten ``access``
    # The handler checks the Authorization header itself (a "public" route with its own
    # bearer token, e.g. /metrics): the access middleware does not take it for an API token.
    own_credentials: bool = False
    produces: str = ""  # the response's media type when not JSON (or an event stream)


class ApiRouter:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, summary: str, tag: str, *,
              params: tuple[Param, ...] = (), body: dict[str, Any] | None = None,
              access: str = "read", streaming: bool = False, status: int = 200,
              head: bool = False, guard: Guard | None = None,
              access_for: AccessFor | None = None, own_credentials: bool = False,
              produces: str = "") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            path_params = tuple(
                Param(name, "path", required=True)
                for name in re.findall(r"\{(\w+)(?::[^}]*)?\}", path)
                if not any(p.name == name for p in params))
            self.routes.append(Route(method, path, handler, summary, tag,
                                     path_params + params, body, access, streaming, status,
                                     head, guard, access_for, own_credentials, produces))
            return handler
        return register

    def get(self, path: str, summary: str, tag: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, summary, tag, **kw)

    def post(self, path: str, summary: str, tag: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, summary, tag, **kw)

    def put(self, path: str, summary: str, tag: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, summary, tag, **kw)

    def patch(self, path: str, summary: str, tag: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, summary, tag, **kw)

    def delete(self, path: str, summary: str, tag: str, **kw: Any
               ) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, summary, tag, **kw)

    def extend(self, other: ApiRouter) -> None:
        self.routes.extend(other.routes)


def route_of(request: web.Request) -> Route | None:
    """The declared route that matched ``request`` (None for pages and static files)."""
    info = request.match_info.route
    handler = getattr(info, "handler", None)
    route: Route | None = getattr(handler, "__dragonfly_route__", None)
    return route
