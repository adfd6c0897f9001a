"""TOTP second factor (RFC 6238 through pyotp), its QR code, and recovery codes.

Verification accepts the previous, current and next 30-second step (clock drift between phone
and server) and refuses any step at or before the last one accepted for the account, so an
observed code cannot be replayed. Recovery codes carry 80 random bits each, so a plain SHA-256
at rest is enough: there is nothing to brute-force offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyotp

STEP = 30
WINDOW = 1
ISSUER = "Dragonfly"
RECOVERY_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l/1/o/0 to misread


# pyotp and segno are imported by the functions that use them: only enrolment and a sign-in
# with a second factor need them, never the server's start.


def _totp(secret: str) -> pyotp.TOTP:
    import pyotp

    return pyotp.TOTP(secret)


def new_secret() -> str:
    import pyotp

    return pyotp.random_base32(32)  # 160 bits, the RFC 4226 recommendation


def provisioning_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_data_uri(uri: str) -> str:
    """The otpauth URI as an SVG QR code in a data: URI, drawn here (no external service)."""
    import segno

    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


def normalise_code(code: object) -> str:
    if not isinstance(code, str):
        return ""
    return "".join(code.split())


def match_step(secret: str, code: str, now: float, window: int = WINDOW) -> int | None:
    """The time step whose code equals ``code`` within ±window steps of ``now``, if any."""
    if not (len(code) == 6 and code.isdigit()):
        return None
    try:
        totp = _totp(secret)
    except (ValueError, TypeError):
        return None
    current = int(now // STEP)
    found = None
    for step in range(current - window, current + window + 1):
        # Compare every candidate (no early exit) so timing does not tell which step matched.
        if hmac.compare_digest(totp.at(step * STEP), code) and found is None:
            found = step
    return found


def verify(secret: str, code: object, now: float, last_step: int) -> int | None:
    """The accepted step (store it as the new ``last_step``), or None: wrong or replayed."""
    step = match_step(secret, normalise_code(code), now)
    if step is None or step <= last_step:
        return None
    return step


def new_recovery_codes(count: int = RECOVERY_COUNT) -> list[str]:
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
    return codes


def normalise_recovery(code: object) -> str:
    if not isinstance(code, str):
        return ""
    return "".join(ch for ch in code.lower() if ch.isalnum())


def hash_recovery(code: str) -> str:
    digest = hashlib.sha256(normalise_recovery(code).encode()).digest()
    return base64.b64encode(digest).decode()


def looks_like_recovery(code: object) -> bool:
    return len(normalise_recovery(code)) == 16
