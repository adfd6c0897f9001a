"""The access-control API: sign-in, setup, accounts, people, tokens, safety mode, audit."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dragonfly.auth import accounts, guard
from dragonfly.auth.allowlist import allowed, parse_address, parse_networks
from dragonfly.auth.audit import parse_time
from dragonfly.auth.middleware import auth_of, caller_of
from dragonfly.auth.policy import FRONT_PAGES
from dragonfly.auth.service import DEMO_COOKIE, DEMO_ROLES
from dragonfly.auth.sessions import COOKIE
from dragonfly.auth.settings import SECURITY_KEYS, Security
from dragonfly.auth.users import ROLES
from dragonfly.config import DHCP_MODES, MODES
from dragonfly.context import ctx_of
from dragonfly.errors import InvalidInput, NotFound, TooManyRequests
from dragonfly.http.errors import error_response, json_response, read_object, reason_of
from dragonfly.http.router import ApiRouter, Param

api = ApiRouter()

_STR = {"type": "string"}
_PASSWORD = {"type": "string", "minLength": 10, "format": "password"}


def _session_cookie(request: web.Request, response: web.StreamResponse, sid: str,
                    security: Security) -> None:
    """HttpOnly, SameSite=Lax, Secure when the browser came over TLS; lives as long as the
    session's absolute limit (the server forgets it sooner when idle)."""
    response.set_cookie(COOKIE, sid, max_age=int(security.session_max), path="/",
                        httponly=True, samesite="Lax",
                        secure=auth_of(request).is_https(request, security))


# --- sign-in --------------------------------------------------------------------------------

@api.get("/api/auth/session", "Who is calling, with the CSRF token for changes", "auth",
         access="public")
async def get_session(request: web.Request) -> dict[str, Any]:
    auth = auth_of(request)
    security = await auth.settings.security()
    return {"user": caller_of(request).template_dict(), "demo": auth.demo,
            "setup_complete": await auth.setup_complete(),
            "front_page": "open" if auth.demo else security.front_page,
            "require_mfa": security.require_mfa}


@api.post("/api/auth/login", "Sign in with name, password and (when enrolled) a TOTP or "
          "recovery code; sets the session cookie", "auth", access="public",
          body={"type": "object", "required": ["name", "password"], "properties": {
              "name": _STR, "password": {"type": "string", "format": "password"},
              "code": {"type": "string", "description": "6-digit TOTP or a recovery code"}}})
async def login(request: web.Request) -> web.StreamResponse:
    auth = auth_of(request)
    body = await read_object(request)
    security = await auth.settings.security()
    caller = caller_of(request)
    try:
        sid, session, user = await auth.login(
            body.get("name"), body.get("password"), body.get("code"), caller.address,
            request.headers.get("User-Agent", ""))
    except TooManyRequests as exc:
        retry = str((exc.detail or {}).get("retry_after", 60))
        return error_response(429, exc.message, exc.detail, {"Retry-After": retry})
    response = json_response({"user": {"name": user.name, "role": user.role, "mfa": user.mfa,
                                       "csrf": session.csrf},
                              "next": "/", "mfa_setup_required":
                                  security.require_mfa and not user.mfa})
    _session_cookie(request, response, sid, security)
    return response


@api.post("/api/auth/logout", "End this session", "auth", access="public")
async def logout(request: web.Request) -> web.StreamResponse:
    await auth_of(request).logout(caller_of(request))
    response = json_response({"ok": True, "next": "/login"})
    response.del_cookie(COOKIE, path="/")
    return response


# --- first-run setup ------------------------------------------------------------------------

@api.get("/api/setup", "Whether first-run setup is complete, with the wizard's choices",
         "auth", access="public")
async def get_setup(request: web.Request) -> dict[str, Any]:
    auth = auth_of(request)
    values = await auth.settings.values()
    return {"complete": await auth.setup_complete(), "modes": list(MODES),
            "dhcp_modes": list(DHCP_MODES),
            "defaults": {"mode": values["server.mode"],
                         "boot_interface": values["boot.interface"],
                         "dhcp_mode": values["boot.dhcp_mode"]}}


@api.post("/api/setup", "Complete first-run setup: the setup token, the first admin "
          "account and the boot settings; signs that admin in", "auth", access="public",
          body={"type": "object", "required": ["setup_token", "name", "password"],
                "properties": {"setup_token": _STR, "name": _STR, "password": _PASSWORD,
                               "mode": {"type": "string", "enum": list(MODES)},
                               "boot_interface": _STR,
                               "dhcp_mode": {"type": "string", "enum": list(DHCP_MODES)}}})
async def post_setup(request: web.Request) -> web.StreamResponse:
    auth = auth_of(request)
    body = await read_object(request)
    security = await auth.settings.security()
    try:
        sid, session, user = await auth.complete_setup(
            body, caller_of(request).address, request.headers.get("User-Agent", ""))
    except TooManyRequests as exc:
        return error_response(429, exc.message, exc.detail, {"Retry-After": "60"})
    response = json_response({"user": {"name": user.name, "role": user.role,
                                       "csrf": session.csrf},
                              "next": "/account?welcome=1"})
    _session_cookie(request, response, sid, security)
    return response


# --- demo -----------------------------------------------------------------------------------

@api.post("/api/demo/role", "Demo only: view the panel as admin, user or an anonymous viewer",
          "auth", access="public", body={"type": "object", "required": ["role"], "properties": {
              "role": {"type": "string", "enum": list(DEMO_ROLES)}}})
async def demo_role(request: web.Request) -> web.StreamResponse:
    if not auth_of(request).demo:
        raise NotFound("the role switcher exists only in the demo")
    body = await read_object(request)
    role = body.get("role")
    if role not in DEMO_ROLES:
        raise InvalidInput(f"role must be one of {', '.join(DEMO_ROLES)}")
    response = json_response({"role": role})
    # A cookie only: nothing is stored anywhere, and it ends with the browser session.
    response.set_cookie(DEMO_COOKIE, str(role), path="/", httponly=True, samesite="Lax")
    return response


# --- one's own account ----------------------------------------------------------------------

@api.get("/api/account", "Your account", "account", access="user")
async def get_account(request: web.Request) -> dict[str, Any]:
    auth = auth_of(request)
    user = await auth.users.require(caller_of(request).name)
    return {**user.public(), "enrolling": bool(user.totp_pending),
            "require_mfa": (await auth.settings.security()).require_mfa}


@api.post("/api/account/password", "Change your password (other sessions end)", "account",
          access="user", body={"type": "object", "required": ["current", "new"], "properties": {
              "current": {"type": "string", "format": "password"}, "new": _PASSWORD}})
async def change_password(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    await accounts.change_own_password(auth_of(request), caller_of(request),
                                       body.get("current"), body.get("new"))
    return {"ok": True}


@api.post("/api/account/mfa/enroll", "Start TOTP enrollment: the secret and its QR code, "
          "shown this once", "account", access="user")
async def mfa_enroll(request: web.Request) -> dict[str, Any]:
    return await accounts.mfa_enroll(auth_of(request), caller_of(request))


@api.post("/api/account/mfa/confirm", "Finish TOTP enrollment with a current code; returns "
          "recovery codes, shown this once", "account", access="user",
          body={"type": "object", "required": ["code"], "properties": {"code": _STR}})
async def mfa_confirm(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    codes = await accounts.mfa_confirm(auth_of(request), caller_of(request), body.get("code"))
    return {"recovery_codes": codes}


@api.post("/api/account/mfa/disable", "Turn TOTP off (password and a current code)",
          "account", access="user", body={"type": "object", "required": ["password", "code"],
                                           "properties": {"password": _STR, "code": _STR}})
async def mfa_disable(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    await accounts.mfa_disable(auth_of(request), caller_of(request), body.get("password"),
                               body.get("code"))
    return {"ok": True}


@api.post("/api/account/recovery-codes", "New recovery codes (the old ones stop working)",
          "account", access="user",
          body={"type": "object", "required": ["code"], "properties": {"code": _STR}})
async def recovery_codes(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    codes = await accounts.new_recovery_codes(auth_of(request), caller_of(request),
                                              body.get("code"))
    return {"recovery_codes": codes}


# --- people ---------------------------------------------------------------------------------

def _name(request: web.Request) -> str:
    return request.match_info["name"].strip().lower()  # account names are stored lowercase


@api.get("/api/users", "Every account", "users", access="admin")
async def list_users(request: web.Request) -> list[dict[str, Any]]:
    return [u.public() for u in await auth_of(request).users.all()]


@api.post("/api/users", "Create an account", "users", access="admin", status=201,
          body={"type": "object", "required": ["name", "password"], "properties": {
              "name": _STR, "role": {"type": "string", "enum": list(ROLES)},
              "password": _PASSWORD}})
async def create_user(request: web.Request) -> web.StreamResponse:
    body = await read_object(request)
    user = await accounts.create_user(auth_of(request), caller_of(request), body.get("name"),
                                      body.get("role"), body.get("password"))
    return json_response(user.public(), 201)


@api.get("/api/users/{name}", "One account", "users", access="admin")
async def get_user(request: web.Request) -> dict[str, Any]:
    return (await auth_of(request).users.require(_name(request))).public()


@api.patch("/api/users/{name}", "Change an account's role or password", "users",
           access="admin", body={"type": "object", "properties": {
               "role": {"type": "string", "enum": list(ROLES)}, "password": _PASSWORD}})
async def patch_user(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    user = await accounts.update_user(auth_of(request), caller_of(request),
                                      _name(request), body)
    return user.public()


@api.delete("/api/users/{name}", "Remove an account, its sessions and its tokens", "users",
            access="admin")
async def delete_user(request: web.Request) -> dict[str, Any]:
    await accounts.remove_user(auth_of(request), caller_of(request), _name(request))
    return {"ok": True}


@api.post("/api/users/{name}/reset-mfa", "Turn off an account's TOTP (a lost phone)", "users",
          access="admin")
async def reset_user_mfa(request: web.Request) -> dict[str, Any]:
    user = await accounts.reset_mfa(auth_of(request), caller_of(request),
                                    _name(request))
    return user.public()


# --- API tokens -----------------------------------------------------------------------------

@api.get("/api/tokens", "API tokens: yours, or everyone's for an admin", "tokens",
         access="user")
async def list_tokens(request: web.Request) -> list[dict[str, Any]]:
    caller = caller_of(request)
    tokens = await auth_of(request).tokens.list(None if caller.role == "admin" else caller.name)
    return [t.public() for t in tokens]


@api.post("/api/tokens", "Create an API token (shown this once); its role is yours or less",
          "tokens", access="user", status=201, body={
              "type": "object", "required": ["name"], "properties": {
                  "name": _STR, "role": {"type": "string", "enum": ["admin", "user", "viewer"]},
                  "expires_days": {"type": "integer", "minimum": 0, "maximum": 3650,
                                   "description": "0: never; default security."
                                                  "token_default_days"}}})
async def create_token(request: web.Request) -> web.StreamResponse:
    body = await read_object(request)
    secret, token = await accounts.create_token(auth_of(request), caller_of(request),
                                                body.get("name"), body.get("role"),
                                                body.get("expires_days"))
    return json_response({**token.public(), "token": secret}, 201)


@api.delete("/api/tokens/{id}", "Revoke an API token", "tokens", access="user")
async def revoke_token(request: web.Request) -> dict[str, Any]:
    token = await accounts.revoke_token(auth_of(request), caller_of(request),
                                        request.match_info["id"])
    return token.public()


# --- safety mode ----------------------------------------------------------------------------

@api.get("/api/safety", "Safety mode: when on, no reimage, delete or power actions", "safety")
async def get_safety(request: web.Request) -> dict[str, Any]:
    return await guard.safety_state(ctx_of(request).store)


@api.put("/api/safety", "Turn safety mode on or off", "safety", access="admin",
         body={"type": "object", "required": ["enabled"], "properties": {
             "enabled": {"type": "boolean"}, "reason": _STR}})
async def put_safety(request: web.Request) -> dict[str, Any]:
    body = await read_object(request)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled must be true or false")
    reason = reason_of(body)
    caller = caller_of(request)
    state = await guard.set_safety(ctx_of(request).store, enabled, reason, caller.actor,
                                   auth_of(request).now())
    await auth_of(request).audit("safety.on" if enabled else "safety.off", caller,
                                 detail={"reason": reason})
    return state


# --- settings and audit ---------------------------------------------------------------------

@api.get("/api/settings/security", "Security settings and the boot networks, each with its "
         "source (panel or config file)", "settings", access="admin")
async def get_security(request: web.Request) -> list[dict[str, Any]]:
    return [s for s in await auth_of(request).settings.describe() if s["key"] in SECURITY_KEYS]


@api.patch("/api/settings/security", "Change security settings (front page, allowlist, MFA, "
           "session and sign-in limits, boot networks)", "settings", access="admin",
           body={"type": "object", "additionalProperties": True, "properties": {
               "security.front_page": {"type": "string", "enum": list(FRONT_PAGES)},
               "security.allowlist": {"type": "array", "items": _STR},
               "security.require_mfa": {"type": "boolean"},
               "boot.allowed_networks": {"type": "array", "items": _STR}}})
async def patch_security(request: web.Request) -> list[dict[str, Any]]:
    auth = auth_of(request)
    body = await read_object(request)
    if any(k not in SECURITY_KEYS for k in body):
        raise InvalidInput("only security settings (security.*, boot.allowed_networks) are "
                           "changed here", {"changeable": list(SECURITY_KEYS)})
    caller = caller_of(request)
    clean = await auth.settings.validate(body)
    if "security.allowlist" in clean and not allowed(
            parse_networks(clean["security.allowlist"]), parse_address(caller.address)):
        raise InvalidInput(f"this allowlist would lock you out: your address "
                           f"{caller.address} is not in it")
    await auth.settings.set(clean, by=caller.actor)
    await auth.audit("settings.change", caller, detail={"changes": clean})
    return [s for s in await auth.settings.describe() if s["key"] in SECURITY_KEYS]


@api.get("/api/audit", "The audit log, newest first", "audit", access="admin", params=(
    Param("actor", help="Exact actor name"),
    Param("action", help="An action and its sub-actions, e.g. login, machine, user.role"),
    Param("machine", help="Machine id"),
    Param("outcome", enum=("ok", "denied", "failed")),
    Param("since", help="Unix seconds or ISO 8601"), Param("until", help="Unix seconds or "
                                                                          "ISO 8601"),
    Param("limit", type="integer")))
async def get_audit(request: web.Request) -> list[dict[str, Any]]:
    q = request.query
    try:
        limit = int(q.get("limit") or 200)
    except ValueError:
        raise InvalidInput("limit must be an integer") from None
    if not 1 <= limit <= 5000:
        raise InvalidInput("limit must be between 1 and 5000")
    return await auth_of(request).audit_log.query(
        actor=q.get("actor", ""), action=q.get("action", ""), machine=q.get("machine", ""),
        outcome=q.get("outcome", ""), since=parse_time(q.get("since", ""), "since"),
        until=parse_time(q.get("until", ""), "until"), limit=limit)

