"""``dragonfly user``, ``dragonfly token`` and ``dragonfly security``: accounts, tokens and
the security settings from the server's own shell, for scripts and lock-out recovery.

They open the sqlite database in the state directory directly (WAL mode, so a running server
is fine), act through the same service as the API, and are audited as ``cli:<login>``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from dragonfly.auth import accounts, guard
from dragonfly.auth.policy import Caller
from dragonfly.auth.service import AuthService
from dragonfly.auth.settings import RUNTIME_KEYS
from dragonfly.auth.tokens import TOKEN_ROLES
from dragonfly.auth.users import ROLES
from dragonfly.config import Config, config_path_from_env
from dragonfly.errors import DragonflyError, InvalidInput
from dragonfly.store import db_path, open_store

Action = Callable[[AuthService, Caller, argparse.Namespace, TextIO], Awaitable[None]]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, dest="auth_state_dir",
                        help="the server's state directory (default: from the config)")
    parser.add_argument("--config", type=Path, dest="auth_config",
                        help="config file (default $DRAGONFLY_CONFIG or "
                             "/etc/dragonfly/dragonfly.toml)")


def add_commands(sub: Any) -> None:
    user = sub.add_parser("user", help="add, change or remove accounts (works offline)",
                          description="Manage accounts directly in the database: for scripts "
                                      "and for getting back in after a lock-out.")
    user.set_defaults(run=cmd_user)
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = user_sub.add_parser("add", help="create an account")
    p.add_argument("name")
    p.add_argument("--role", choices=ROLES, default="user")
    _password_args(p)
    _common(p)
    p = user_sub.add_parser("passwd", help="set an account's password")
    p.add_argument("name")
    _password_args(p)
    _common(p)
    for name, text in (("remove", "remove an account, its sessions and tokens"),
                       ("reset-mfa", "turn off an account's two-factor authentication")):
        p = user_sub.add_parser(name, help=text)
        p.add_argument("name")
        _common(p)
    _common(user_sub.add_parser("list", help="list accounts"))

    token = sub.add_parser("token", help="create, list or revoke API tokens",
                           description="API tokens for automation, made or revoked offline.")
    token.set_defaults(run=cmd_token)
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = token_sub.add_parser("create", help="create a token and print it (once)")
    p.add_argument("--user", required=True, help="the account the token acts as")
    p.add_argument("--name", required=True, help="what the token is for")
    p.add_argument("--role", choices=TOKEN_ROLES,
                   help="the token's role (default and maximum: the account's)")
    p.add_argument("--expires-days", type=int,
                   help="lifetime in days, 0 for never (default security.token_default_days)")
    _common(p)
    p = token_sub.add_parser("revoke", help="revoke a token by its id")
    p.add_argument("id")
    _common(p)
    _common(token_sub.add_parser("list", help="list tokens (never their secrets)"))

    sec = sub.add_parser("security", help="show or change security settings (lock-out "
                                          "recovery)",
                         description="Security settings changed in the panel are stored in "
                                     "the database over the config file. Show them, change "
                                     "them, or reset them to the config file's values.")
    sec.set_defaults(run=cmd_security)
    sec_sub = sec.add_subparsers(dest="security_command", metavar="ACTION", required=True)
    _common(sec_sub.add_parser("show", help="every setting, its value and source"))
    p = sec_sub.add_parser("set", help="change one setting, e.g. security.front_page login")
    p.add_argument("key", choices=RUNTIME_KEYS)
    p.add_argument("value", help="the value; for lists, comma-separated (empty: none)")
    _common(p)
    p = sec_sub.add_parser("reset", help="drop panel changes so the config file applies")
    p.add_argument("keys", nargs="*", help="settings to reset (default: all)")
    _common(p)
    p = sec_sub.add_parser("safety", help="turn safety mode on or off")
    p.add_argument("state", choices=("on", "off"))
    p.add_argument("--reason", default="")
    _common(p)


def _password_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
    group.add_argument("--generate", action="store_true",
                       help="make up a strong password and print it")


def _state_dir(args: argparse.Namespace) -> Path:
    if args.auth_state_dir is not None:
        return Path(args.auth_state_dir)
    path = args.auth_config or args.config or config_path_from_env()
    config = Config.load(path if path.exists() else None)
    return config.state_dir


def _read_password(args: argparse.Namespace, out: TextIO) -> str:
    if args.generate:
        return secrets.token_urlsafe(15)  # printed once the change has been made
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise InvalidInput("no terminal to ask for the password: use --password-stdin or "
                           "--generate")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidInput("the two passwords differ")
    return first


async def _run(args: argparse.Namespace, out: TextIO, action: Action, create: bool) -> None:
    state_dir = _state_dir(args)
    db = db_path(state_dir)
    if not db.exists() and not create:
        raise DragonflyError(f"no Dragonfly database at {db}: pass --state-dir or "
                             "--config of the installation")
    store = open_store(state_dir)
    await store.open()
    try:
        config = Config.load(None, overrides={"server.state_dir": str(state_dir)})
        auth = AuthService(store, config)
        caller = Caller(name=f"cli:{_login()}", role="admin", via="cli")
        await action(auth, caller, args, out)
    finally:
        await store.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


# --- user -----------------------------------------------------------------------------------

async def _user_add(auth: AuthService, caller: Caller, args: argparse.Namespace,
                    out: TextIO) -> None:
    password = args.password
    user = await accounts.create_user(auth, caller, args.name, args.role, password)
    out.write(f"created {user.role} {user.name}\n")
    if args.generate:
        out.write(f"password: {password}\n")


async def _user_passwd(auth: AuthService, caller: Caller, args: argparse.Namespace,
                       out: TextIO) -> None:
    await accounts.set_password(auth, caller, args.name.strip().lower(), args.password)
    out.write(f"password of {args.name} changed; its sessions were ended\n")
    if args.generate:
        out.write(f"password: {args.password}\n")


async def _user_remove(auth: AuthService, caller: Caller, args: argparse.Namespace,
                       out: TextIO) -> None:
    await accounts.remove_user(auth, caller, args.name.strip().lower())
    out.write(f"removed {args.name}\n")


async def _user_reset_mfa(auth: AuthService, caller: Caller, args: argparse.Namespace,
                          out: TextIO) -> None:
    await accounts.reset_mfa(auth, caller, args.name.strip().lower())
    out.write(f"two-factor authentication of {args.name} is off; they sign in with their "
              "password and can enroll again\n")


async def _user_list(auth: AuthService, caller: Caller, args: argparse.Namespace,
                     out: TextIO) -> None:
    for user in await auth.users.all():
        out.write(f"{user.name}\t{user.role}\tmfa={'on' if user.mfa else 'off'}\n")


def cmd_user(args: argparse.Namespace, out: TextIO) -> int:
    actions: dict[str, tuple[Action, bool]] = {
        "add": (_user_add, True), "passwd": (_user_passwd, False),
        "remove": (_user_remove, False), "reset-mfa": (_user_reset_mfa, False),
        "list": (_user_list, False)}
    action, create = actions[args.user_command]
    if args.user_command in ("add", "passwd"):
        args.password = _read_password(args, out)
    asyncio.run(_run(args, out, action, create))
    return 0


# --- token ----------------------------------------------------------------------------------

async def _token_create(auth: AuthService, caller: Caller, args: argparse.Namespace,
                        out: TextIO) -> None:
    secret, token = await accounts.create_token(auth, caller, args.name, args.role,
                                                args.expires_days,
                                                owner=args.user.strip().lower())
    out.write(f"{secret}\n")
    sys.stderr.write(f"token {token.id} for {token.user} with role {token.role}; shown once\n")


async def _token_revoke(auth: AuthService, caller: Caller, args: argparse.Namespace,
                        out: TextIO) -> None:
    token = await accounts.revoke_token(auth, caller, args.id)
    out.write(f"revoked {token.id} ({token.name}, {token.user})\n")


async def _token_list(auth: AuthService, caller: Caller, args: argparse.Namespace,
                      out: TextIO) -> None:
    for token in await auth.tokens.list():
        out.write(json.dumps(token.public()) + "\n")


def cmd_token(args: argparse.Namespace, out: TextIO) -> int:
    actions: dict[str, Action] = {"create": _token_create, "revoke": _token_revoke,
                                  "list": _token_list}
    asyncio.run(_run(args, out, actions[args.token_command], False))
    return 0


# --- security -------------------------------------------------------------------------------

async def _security_show(auth: AuthService, caller: Caller, args: argparse.Namespace,
                         out: TextIO) -> None:
    for item in await auth.settings.describe():
        out.write(f"{item['key']} = {json.dumps(item['value'])}  ({item['source']})\n")
    safety = await guard.safety_state(auth.store)
    out.write(f"safety mode = {'on' if safety['enabled'] else 'off'}"
              + (f" ({safety['reason']})" if safety["reason"] else "") + "\n")


async def _security_set(auth: AuthService, caller: Caller, args: argparse.Namespace,
                        out: TextIO) -> None:
    clean = await auth.settings.set({args.key: args.value}, by=caller.actor)
    await auth.audit("settings.change", caller, detail={"changes": clean})
    out.write(f"{args.key} = {json.dumps(clean[args.key])}\n")


async def _security_reset(auth: AuthService, caller: Caller, args: argparse.Namespace,
                          out: TextIO) -> None:
    unknown = [k for k in args.keys if k not in RUNTIME_KEYS]
    if unknown:
        raise InvalidInput(f"unknown settings: {', '.join(unknown)}")
    dropped = await auth.settings.reset(args.keys or None)
    await auth.audit("settings.reset", caller, detail={"keys": dropped})
    out.write(("reset " + ", ".join(dropped) if dropped else "nothing to reset") + "\n")


async def _security_safety(auth: AuthService, caller: Caller, args: argparse.Namespace,
                           out: TextIO) -> None:
    enabled = args.state == "on"
    await guard.set_safety(auth.store, enabled, args.reason, caller.actor, auth.now())
    await auth.audit("safety.on" if enabled else "safety.off", caller,
                     detail={"reason": args.reason})
    out.write(f"safety mode {args.state}\n")


def cmd_security(args: argparse.Namespace, out: TextIO) -> int:
    actions: dict[str, Action] = {"show": _security_show, "set": _security_set,
                                  "reset": _security_reset, "safety": _security_safety}
    asyncio.run(_run(args, out, actions[args.security_command], False))
    return 0
