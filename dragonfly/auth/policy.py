"""Who may do what: callers, roles, route access levels and the front-page modes.

One table of ranks decides everything. Callers have a role (anonymous < viewer < user < admin);
routes declare the least role they need (public < read < user < admin; "agent" routes are
governed by the boot networks instead). The front page mode changes what anonymous callers and
plain users get: ``open`` lets anonymous callers read, ``admin`` shuts out everyone but admins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dragonfly.domain.model import ACTION_ACCESS
from dragonfly.http.router import Route

ROLE_RANK = {"anonymous": 0, "viewer": 1, "user": 2, "admin": 3}
ACCESS_RANK = {"public": 0, "read": 1, "user": 2, "admin": 3}
FRONT_PAGES = ("open", "login", "admin")

# Lifecycle actions and the least role each needs come from the lifecycle table
# (``ACTION_ACCESS``): the action route declares the floor; this only ever tightens it.

# Routes a token may not call: they act on the person's own account or mint credentials, which
# needs an interactive sign-in (a leaked token must not outlive itself or take over an account).
SESSION_ONLY: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/api/tokens"),
})
SESSION_ONLY_PREFIXES = ("/api/account",)

# Unsafe routes that no cookie authenticates, so they take no CSRF token (the Origin check
# still applies): signing in, first-run setup, and the demo's role switch.
CSRF_EXEMPT: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/api/auth/login"),
    ("POST", "/api/setup"),
    ("POST", "/api/demo/role"),
})

# While MFA is required and the account has none, these are all a session may reach.
MFA_ENROLL_PATHS = ("/api/account", "/account", "/api/auth/")


@dataclass
class Caller:
    name: str = ""
    role: str = "anonymous"
    via: str = "anonymous"  # anonymous | session | token | demo | agent
    csrf: str = ""
    session_key: str = ""
    token_id: str = ""
    mfa: bool = False
    address: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.via in ("session", "token") or (self.via == "demo" and self.role != "viewer")

    @property
    def rank(self) -> int:
        return ROLE_RANK.get(self.role, 0)

    @property
    def actor(self) -> str:
        if self.via == "token":
            return f"{self.name} (token {self.token_id})"
        return self.name or ("anonymous" if self.via != "agent" else "agent")

    def can(self, access: str) -> bool:
        return self.rank >= ACCESS_RANK.get(access, 99)

    def template_dict(self) -> dict[str, Any]:
        """What templates get as ``user``: identity, CSRF token and what to show."""
        actions = {a: self.can(level) for a, level in ACTION_ACCESS.items()}
        return {
            "name": self.name, "role": self.role, "via": self.via,
            "authenticated": self.authenticated, "csrf": self.csrf, "mfa": self.mfa,
            "can": {"read": self.can("read"), "write": self.can("user"),
                    "admin": self.can("admin"), "actions": actions,
                    "delete": self.can("admin"), "power": self.can("admin"),
                    "lock": self.can("user"), "unlock": self.can("admin"),
                    "tokens": self.via in ("session", "demo") and self.can("user")},
        }


# Per-request state. The panel's render() passes USER_KEY to templates as ``user``.
CALLER_KEY: web.RequestKey[Caller] = web.RequestKey("dragonfly_caller", Caller)
USER_KEY: web.RequestKey[dict[str, Any]] = web.RequestKey("dragonfly_user", dict)
CLEAR_SESSION_KEY: web.RequestKey[bool] = web.RequestKey("dragonfly_clear_session", bool)
# Safety mode as pages need it for their banner ({"enabled", "reason", "by", "since"}); set for
# HTML page requests only.
SAFETY_STATE_KEY: web.RequestKey[dict[str, Any]] = web.RequestKey("dragonfly_safety", dict)


def set_caller(request: web.Request, caller: Caller) -> Caller:
    request[CALLER_KEY] = caller
    request[USER_KEY] = caller.template_dict()
    return caller


@dataclass(frozen=True)
class Denial:
    status: int  # 401 sign in, 403 not allowed
    message: str


def effective_access(route: Route | None, access: str, request: web.Request) -> str:
    """The declared access, tightened for parameterised routes (the lifecycle actions)."""
    if route is not None and route.access_for is not None:
        wanted = route.access_for(request)
        if ACCESS_RANK.get(wanted, 99) > ACCESS_RANK.get(access, 0):
            return wanted
    return access


def effective_caller(caller: Caller, front_page: str) -> Caller:
    """Anonymous callers become viewers on an open front page."""
    if caller.role == "anonymous" and front_page == "open":
        caller.role = "viewer"
    return caller


def decide(caller: Caller, access: str, front_page: str) -> Denial | None:
    """None when ``caller`` may use a route of ``access``; else why not."""
    needed = ACCESS_RANK.get(access)
    if needed is None:
        return Denial(403, f"this route declares an unknown access level {access!r}")
    if needed == 0:
        return None
    if front_page == "admin" and caller.role != "admin":
        if caller.authenticated:
            return Denial(403, "this Dragonfly admits administrators only (front page mode "
                               "'admin'); ask an administrator")
        return Denial(401, "sign in as an administrator first")
    if caller.rank >= needed:
        return None
    if not caller.authenticated:
        return Denial(401, "sign in first" if caller.via != "token"
                      else "this token is not valid")
    return Denial(403, f"your role ({caller.role}) cannot do this: it needs {access}")


def session_only(method: str, path: str) -> bool:
    return (method, path) in SESSION_ONLY or any(
        path == p or path.startswith(p + "/") for p in SESSION_ONLY_PREFIXES)
