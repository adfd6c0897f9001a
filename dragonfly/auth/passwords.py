"""Password hashing with scrypt (memory-hard, in the standard library) and the password policy.

Hashes are self-describing (``scrypt$n$r$p$salt$hash``) so the cost can be raised later without
invalidating stored passwords. Hashing takes a noticeable fraction of a second on purpose: call
these from a thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import cache

from dragonfly.errors import InvalidInput

SCRYPT_N = 2 ** 15  # 32 MiB with r=8: memory-hard enough to make GPU guessing expensive
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
_MAXMEM = 128 * 1024 * 1024
MIN_LENGTH = 10
MAX_LENGTH = 1024  # scrypt of a huge input costs the server, not the attacker


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN,
                            maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches; False for a wrong password or a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected), maxmem=_MAXMEM)
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


@cache
def dummy_hash() -> str:
    """A hash to check against when the account does not exist, so timing reveals nothing."""
    return hash_password(secrets.token_urlsafe(16))


def check_password_policy(password: object, username: str = "") -> str:
    """The password if acceptable, else InvalidInput saying what to change."""
    if not isinstance(password, str):
        raise InvalidInput("the password must be a string")
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"the password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"the password must be at most {MAX_LENGTH} characters long")
    if username and password.lower() == username.lower():
        raise InvalidInput("the password cannot be the account name")
    if len(set(password)) < 4:
        raise InvalidInput("the password is too repetitive")
    return password
