"""The auth service: one object per application holding the auth state and its operations.

Routes, the middleware and the CLI all go through it. Everything durable lives in the store
(users, sessions, tokens, settings, audit, locks), read per request, so a change made by the
CLI in another process (a revoked token, a reset account) takes effect at once. Only sign-in
failure counters live in memory.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dragonfly.auth import firstrun, totp
from dragonfly.auth.allowlist import client_address, contains, parse_address
from dragonfly.auth.audit import AuditLog
from dragonfly.auth.passwords import (
    check_password_policy,
    dummy_hash,
    hash_password,
    verify_password,
)
from dragonfly.auth.policy import CLEAR_SESSION_KEY, Caller
from dragonfly.auth.sessions import COOKIE, Session, Sessions
from dragonfly.auth.settings import RuntimeSettings, Security
from dragonfly.auth.throttle import LoginThrottle, address_key
from dragonfly.auth.tokens import Tokens, capped_role
from dragonfly.auth.users import USER, User, Users, validate_username
from dragonfly.config import Config
from dragonfly.errors import Conflict, Forbidden, TooManyRequests, Unauthorized
from dragonfly.store import Put, RevisionMismatch, Store

AUTH_KEY = "auth"
DEMO_COOKIE = "dragonfly_demo_role"
DEMO_ROLES = ("admin", "user", "viewer")


class AuthService:
    def __init__(self, store: Store, config: Config, demo: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.demo = demo
        self._clock = clock
        self.users = Users(store)
        self.sessions = Sessions(store, self.now)
        self.tokens = Tokens(store, self.now)
        self.settings = RuntimeSettings(store, config, self.now)
        self.audit_log = AuditLog(store, self.now)
        self.throttle = LoginThrottle(self.now)
        self.demo_csrf = secrets.token_urlsafe(24)
        self._setup_done = False

    # The clock is swappable at run time (tests inject one); every part reads it through now().
    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self._clock = value

    def now(self) -> float:
        return self._clock()

    # --- setup state ------------------------------------------------------------------------

    async def setup_complete(self) -> bool:
        if self.demo or self._setup_done:
            return True
        # Only ever cached once true: setup never becomes incomplete again.
        self._setup_done = await firstrun.is_complete(self.store)
        return self._setup_done

    # --- who is calling ---------------------------------------------------------------------

    def address_of(self, request: web.Request, security: Security) -> str:
        address = client_address(request.remote, request.headers.get("X-Forwarded-For"),
                                 security.trusted_proxies)
        return str(address) if address is not None else ""

    def is_https(self, request: web.Request, security: Security) -> bool:
        if request.secure:
            return True
        return (contains(security.trusted_proxies, parse_address(request.remote))
                and request.headers.get("X-Forwarded-Proto", "").lower() == "https")

    async def identify(self, request: web.Request, security: Security
                       ) -> tuple[Caller, str]:
        """The caller and, when credentials were presented but are no good, why."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return Caller(), "use 'Authorization: Bearer <token>'"
            token = await self.tokens.authenticate(value)
            if token is None:
                return Caller(), "this API token is unknown, revoked or expired"
            owner = await self.users.get(token.user)
            if owner is None:
                return Caller(), "the account that created this API token no longer exists"
            return Caller(name=owner.name, role=capped_role(token.role, owner.role),
                          via="token", token_id=token.id), ""
        sid = request.cookies.get(COOKIE, "")
        if sid:
            session = await self.sessions.lookup(sid, security.session_idle,
                                                 security.session_max)
            if session is not None:
                user = await self.users.get(session.user)
                if user is not None:
                    return Caller(name=user.name, role=user.role, via="session",
                                  csrf=session.csrf, session_key=session.key,
                                  mfa=user.mfa), ""
                await self.sessions.delete(session.key)
            request[CLEAR_SESSION_KEY] = True
        if self.demo:
            picked = request.cookies.get(DEMO_COOKIE, "")
            role = picked if picked in DEMO_ROLES else "admin"
            return Caller(name="" if role == "viewer" else f"demo-{role}", role=role,
                          via="demo", csrf=self.demo_csrf if picked else ""), ""
        return Caller(), ""

    # --- audit ------------------------------------------------------------------------------

    async def audit(self, action: str, caller: Caller | None = None, *, machine: str = "",
                    target: str = "", outcome: str = "ok", detail: dict[str, Any] | None = None,
                    actor: str = "", address: str = "") -> None:
        c = caller or Caller()
        await self.audit_log.record(action, actor=actor or c.actor, role=c.role, via=c.via,
                                    address=address or c.address, machine=machine,
                                    target=target, outcome=outcome, detail=detail)

    # --- sign-in ----------------------------------------------------------------------------

    async def login(self, name: object, password: object, code: object, address: str,
                    agent: str = "") -> tuple[str, Session, User]:
        """A new session for correct credentials; raises Unauthorized (with
        ``{"mfa_required": true}`` when only the second factor is missing or wrong) or
        TooManyRequests during a lock-out."""
        security = await self.settings.security()
        raw_name = name.strip().lower()[:64] if isinstance(name, str) else ""
        user_key, addr_key = f"u:{raw_name}", f"a:{address_key(address)}"
        wait = max(self.throttle.retry_after(user_key, security.max_failures, security.lockout),
                   self.throttle.retry_after(addr_key, security.max_failures_address,
                                             security.lockout))
        if wait > 0:
            await self.audit("login.locked", actor=raw_name, address=address, outcome="denied")
            minutes = max(1, round(wait / 60))
            raise TooManyRequests(f"too many failed sign-ins: try again in about {minutes} "
                                  f"minute{'s' if minutes != 1 else ''}",
                                  {"retry_after": int(wait) + 1})
        try:
            username = validate_username(name)
        except Exception:
            username = ""
        user = await self.users.get(username) if username else None
        secret = password if isinstance(password, str) and len(password) <= 1024 else ""
        ok = await asyncio.to_thread(verify_password, secret,
                                     user.password if user else dummy_hash())
        if user is None or not ok:
            self._failed(security, user_key, addr_key)
            await self.audit("login.failed", actor=raw_name, address=address,
                             outcome="failed", detail={"reason": "wrong name or password"})
            raise Unauthorized("wrong account name or password")
        if user.mfa:
            await self._second_factor(user, code, user_key, addr_key, address, security)
        user.last_login = self.now()
        try:
            await self.users.save(user)
        except RevisionMismatch:
            raise Unauthorized("the account changed while signing in; try again") from None
        self.throttle.clear(user_key)
        await self.sessions.purge_expired(security.session_idle, security.session_max)
        sid, session = await self.sessions.create(user.name, address, agent)
        await self.audit("login", Caller(name=user.name, role=user.role, via="session",
                                         address=address))
        return sid, session, user

    def _failed(self, security: Security, user_key: str, addr_key: str) -> None:
        self.throttle.fail(user_key, security.max_failures, security.lockout)
        self.throttle.fail(addr_key, security.max_failures_address, security.lockout)

    async def _second_factor(self, user: User, code: object, user_key: str, addr_key: str,
                             address: str, security: Security) -> None:
        if not totp.normalise_code(code):
            raise Unauthorized("enter the 6-digit code from your authenticator app (or a "
                               "recovery code)", {"mfa_required": True})
        if totp.looks_like_recovery(code):
            digest = totp.hash_recovery(str(code))
            if digest in user.recovery:
                user.recovery.remove(digest)
                await self.audit("mfa.recovery_used", Caller(name=user.name, role=user.role,
                                                             via="session", address=address),
                                 detail={"left": len(user.recovery)})
                return
        else:
            step = totp.verify(user.totp_secret, code, self.now(), user.totp_last_step)
            if step is not None:
                user.totp_last_step = step
                return
        self._failed(security, user_key, addr_key)
        await self.audit("login.failed", actor=user.name, address=address, outcome="failed",
                         detail={"reason": "wrong or reused second-factor code"})
        raise Unauthorized("wrong, expired or already used code", {"mfa_required": True})

    async def logout(self, caller: Caller) -> None:
        if caller.session_key:
            await self.sessions.delete(caller.session_key)
            await self.audit("logout", caller)

    # --- first-run setup --------------------------------------------------------------------

    async def complete_setup(self, body: dict[str, Any], address: str, agent: str = ""
                             ) -> tuple[str, Session, User]:
        if await self.setup_complete():
            raise Conflict("setup is already complete; sign in instead")
        security = await self.settings.security()
        key = f"s:{address_key(address)}"
        if self.throttle.retry_after(key, security.max_failures_address, security.lockout):
            raise TooManyRequests("too many wrong setup tokens from this address; wait and "
                                  "try again")
        if not await firstrun.token_matches(self.store, body.get("setup_token")):
            self.throttle.fail(key, security.max_failures_address, security.lockout)
            await self.audit("setup.failed", address=address, outcome="failed",
                             detail={"reason": "wrong setup token"})
            raise Forbidden("wrong setup token: use the one `dragonfly serve` printed at its "
                            "last start")
        name = validate_username(body.get("name"))
        password = check_password_policy(body.get("password"), name)
        boot = {k: body[f] for k, f in (("server.mode", "mode"),
                                        ("boot.interface", "boot_interface"),
                                        ("boot.dhcp_mode", "dhcp_mode"))
                if body.get(f) not in (None, "")}
        boot_clean = await self.settings.validate(boot)
        now = self.now()
        hashed = await asyncio.to_thread(hash_password, password)
        user = User(name=name, role="admin", password=hashed, created_at=now, updated_at=now,
                    created_by="setup", last_login=now)
        try:
            await self.store.commit([Put(USER, name, user.to_dict(), expect_rev=0),
                                     *firstrun.completion_ops(name, now, "wizard", first=True)])
        except RevisionMismatch:
            raise Conflict("setup was completed by someone else a moment ago") from None
        self._setup_done = True
        await self.settings.set(boot_clean, by=name)
        caller = Caller(name=name, role="admin", via="session", address=address)
        await self.audit("setup.complete", caller, detail={"boot": boot_clean})
        sid, session = await self.sessions.create(name, address, agent)
        return sid, session, user
