"""Domain errors. The HTTP edge (``dragonfly.http.errors``) maps each to a status code."""

from __future__ import annotations

from typing import Any


class DragonflyError(Exception):
    """Base of every error a caller can cause; ``status`` is the HTTP status it maps to."""

    status = 500
    code = "internal"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(DragonflyError):
    status = 400
    code = "invalid_input"


class Unauthorized(DragonflyError):
    status = 401
    code = "unauthorized"


class Forbidden(DragonflyError):
    status = 403
    code = "forbidden"


class NotFound(DragonflyError):
    status = 404
    code = "not_found"


class Conflict(DragonflyError):
    """The request is valid but the current state does not allow it (e.g. a lifecycle move)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(DragonflyError):
    status = 413
    code = "payload_too_large"


class Locked(DragonflyError):
    """Blocked by a node lock or the global safety mode."""

    status = 423
    code = "locked"


class TooManyRequests(DragonflyError):
    status = 429
    code = "too_many_requests"


class Unavailable(DragonflyError):
    """A capability this instance does not have (e.g. no workflow engine configured)."""

    status = 503
    code = "unavailable"
