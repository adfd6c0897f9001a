"""Account operations shared by the API and the CLI: people, passwords, MFA and tokens.

Each checks its preconditions (the last admin stays an admin, MFA changes need a fresh code),
writes, invalidates what the change makes stale (sessions after a password reset), and audits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dragonfly.auth import firstrun, totp
from dragonfly.auth.passwords import check_password_policy, hash_password, verify_password
from dragonfly.auth.policy import Caller
from dragonfly.auth.service import AuthService
from dragonfly.auth.tokens import ApiToken
from dragonfly.auth.users import User, validate_role, validate_username
from dragonfly.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized

# --- people (admins) ------------------------------------------------------------------------


async def create_user(auth: AuthService, caller: Caller, name: object, role: object,
                      password: object) -> User:
    clean = validate_username(name)
    role_clean = validate_role(role if role not in (None, "") else "user")
    secret = check_password_policy(password, clean)
    now = auth.now()
    user = User(name=clean, role=role_clean, password=await asyncio.to_thread(
        hash_password, secret), created_at=now, updated_at=now, created_by=caller.actor)
    await auth.users.create(user)
    await auth.audit("user.create", caller, target=clean, detail={"role": role_clean})
    # An admin made from the CLI on a fresh install completes setup (scripted installs and
    # recovery); the wizard is then no longer offered.
    if role_clean == "admin" and caller.via == "cli" and not await auth.setup_complete():
        await auth.store.commit(firstrun.completion_ops(clean, now, "cli"))
        await auth.audit("setup.complete", caller, target=clean)
    return user


async def _keep_an_admin(auth: AuthService, user: User, what: str) -> None:
    if user.role == "admin" and await auth.users.count_admins() <= 1:
        raise Conflict(f"cannot {what} the last administrator; make another admin first")


async def update_user(auth: AuthService, caller: Caller, name: str, changes: dict[str, Any]
                      ) -> User:
    unknown = set(changes) - {"role", "password"}
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))} of an account")
    user = await auth.users.require(name)
    if "role" in changes and changes["role"] != user.role:
        role = validate_role(changes["role"])
        if role != "admin":
            await _keep_an_admin(auth, user, "demote")
        before, user.role = user.role, role
        user.updated_at = auth.now()
        await auth.users.save(user)
        await auth.audit("user.role", caller, target=name, detail={"from": before, "to": role})
    if "password" in changes:
        await set_password(auth, caller, name, changes["password"])
        user = await auth.users.require(name)
    return user


async def set_password(auth: AuthService, caller: Caller, name: str, password: object,
                       keep_session: str = "") -> None:
    user = await auth.users.require(name)
    secret = check_password_policy(password, name)
    user.password = await asyncio.to_thread(hash_password, secret)
    user.updated_at = auth.now()
    await auth.users.save(user)
    # Every other session of the account ends: whoever knew the old password is out.
    await auth.sessions.delete_for_user(name, keep=keep_session)
    await auth.audit("user.password", caller, target=name)


async def remove_user(auth: AuthService, caller: Caller, name: str) -> None:
    user = await auth.users.require(name)
    await _keep_an_admin(auth, user, "remove")
    await auth.users.delete(name)
    await auth.sessions.delete_for_user(name)
    revoked = await auth.tokens.delete_for_user(name)
    await auth.audit("user.remove", caller, target=name, detail={"tokens_revoked": revoked})


async def reset_mfa(auth: AuthService, caller: Caller, name: str) -> User:
    user = await auth.users.require(name)
    user.totp_secret = user.totp_pending = ""
    user.recovery = []
    user.updated_at = auth.now()
    await auth.users.save(user)
    await auth.sessions.delete_for_user(name)
    await auth.audit("mfa.reset", caller, target=name)
    return user


# --- one's own account ----------------------------------------------------------------------


async def _check_code(auth: AuthService, user: User, code: object) -> None:
    """A current TOTP code (advancing the replay guard) or an unused recovery code."""
    if totp.looks_like_recovery(code):
        digest = totp.hash_recovery(str(code))
        if digest in user.recovery:
            user.recovery.remove(digest)
            return
    else:
        step = totp.verify(user.totp_secret, code, auth.now(), user.totp_last_step)
        if step is not None:
            user.totp_last_step = step
            return
    raise Unauthorized("wrong, expired or already used code")


async def change_own_password(auth: AuthService, caller: Caller, current: object,
                              new: object) -> None:
    user = await auth.users.require(caller.name)
    if not isinstance(current, str) or not await asyncio.to_thread(
            verify_password, current, user.password):
        await auth.audit("user.password", caller, target=caller.name, outcome="failed")
        raise Unauthorized("the current password is wrong")
    await set_password(auth, caller, caller.name, new, keep_session=caller.session_key)


async def mfa_enroll(auth: AuthService, caller: Caller) -> dict[str, Any]:
    """Start enrollment: a new secret, shown once, confirmed by ``mfa_confirm``."""
    user = await auth.users.require(caller.name)
    if user.mfa:
        raise Conflict("two-factor authentication is already on; turn it off first to "
                       "enroll a new device")
    user.totp_pending = totp.new_secret()
    await auth.users.save(user)
    uri = totp.provisioning_uri(user.totp_pending, user.name)
    return {"secret": user.totp_pending, "uri": uri, "qr": totp.qr_data_uri(uri),
            "digits": 6, "period": totp.STEP, "algorithm": "SHA1"}


async def mfa_confirm(auth: AuthService, caller: Caller, code: object) -> list[str]:
    user = await auth.users.require(caller.name)
    if user.mfa:
        raise Conflict("two-factor authentication is already on")
    if not user.totp_pending:
        raise Conflict("start enrollment first")
    step = totp.verify(user.totp_pending, code, auth.now(), 0)
    if step is None:
        raise InvalidInput("that code does not match: check the clock of the device and "
                           "enter the current code")
    codes = totp.new_recovery_codes()
    user.totp_secret, user.totp_pending, user.totp_last_step = user.totp_pending, "", step
    user.recovery = [totp.hash_recovery(c) for c in codes]
    user.updated_at = auth.now()
    await auth.users.save(user)
    await auth.audit("mfa.enable", caller, target=user.name)
    return codes


async def mfa_disable(auth: AuthService, caller: Caller, password: object, code: object
                      ) -> None:
    if (await auth.settings.security()).require_mfa:
        raise Forbidden("two-factor authentication is required for every account here")
    user = await auth.users.require(caller.name)
    if not user.mfa:
        raise Conflict("two-factor authentication is not on")
    if not isinstance(password, str) or not await asyncio.to_thread(
            verify_password, password, user.password):
        raise Unauthorized("the password is wrong")
    await _check_code(auth, user, code)
    user.totp_secret = user.totp_pending = ""
    user.recovery = []
    await auth.users.save(user)
    await auth.audit("mfa.disable", caller, target=user.name)


async def new_recovery_codes(auth: AuthService, caller: Caller, code: object) -> list[str]:
    user = await auth.users.require(caller.name)
    if not user.mfa:
        raise Conflict("turn on two-factor authentication first")
    await _check_code(auth, user, code)
    codes = totp.new_recovery_codes()
    user.recovery = [totp.hash_recovery(c) for c in codes]
    await auth.users.save(user)
    await auth.audit("mfa.recovery_codes", caller, target=user.name)
    return codes


# --- API tokens -----------------------------------------------------------------------------


async def create_token(auth: AuthService, caller: Caller, name: object, role: object,
                       expires_days: object, owner: str | None = None) -> tuple[str, ApiToken]:
    """A token for ``owner`` (default: the caller). Its role is capped by the owner's."""
    user = await auth.users.require(owner or caller.name)
    if expires_days in (None, ""):
        expires_days = (await auth.settings.security()).token_default_days
    secret, token = await auth.tokens.create(user.name, user.role, name, role, expires_days)
    await auth.audit("token.create", caller, target=token.id,
                     detail={"name": token.name, "role": token.role, "owner": user.name,
                             "expires_at": token.expires_at})
    return secret, token


async def revoke_token(auth: AuthService, caller: Caller, token_id: str) -> ApiToken:
    token = await auth.tokens.get(token_id)
    if caller.via != "cli" and caller.role != "admin" and token.user != caller.name:
        raise NotFound(f"no token {token_id!r}")  # someone else's token: not even its existence
    await auth.tokens.revoke(token_id)
    await auth.audit("token.revoke", caller, target=token_id,
                     detail={"name": token.name, "owner": token.user})
    return token
