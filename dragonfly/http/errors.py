"""The one error edge: domain errors and aiohttp's own errors become JSON bodies.

Also turns plain data returned by API handlers into JSON responses, so handlers never build
responses themselves.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from dragonfly.errors import DragonflyError, InvalidInput, PayloadTooLarge

log = logging.getLogger(__name__)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
MAX_JSON_BODY = 1 << 20


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(data).encode(), status=status,
                        content_type="application/json")


def error_response(status: int, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    response = json_response(body, status)
    if headers:
        response.headers.update(headers)
    return response


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/boot/")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        result = await handler(request)
    except DragonflyError as exc:
        return error_response(exc.status, exc.message, exc.detail)
    except web.HTTPException as exc:
        if not _wants_json(request) or exc.status < 400:
            raise
        reason = exc.reason if exc.text in (None, "", f"{exc.status}: {exc.reason}") else exc.text
        return error_response(exc.status, reason or "error", None,
                              {k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception:
        # A bug: log it with the traceback, tell the caller plainly, reveal no internals.
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_json(request):
            raise
        return error_response(500, "internal error; the server log has the details")
    if isinstance(result, web.StreamResponse):
        return result
    return json_response(result)


async def read_json(request: web.Request, max_size: int = MAX_JSON_BODY) -> Any:
    """The request body as JSON, or a 400/413/415 that says what is wrong with it."""
    if request.content_length is not None and request.content_length > max_size:
        raise PayloadTooLarge(f"request body larger than {max_size} bytes")
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain", ""):
        raise InvalidInput(f"expected a JSON body, got content type {ctype}")
    raw = await request.content.read(max_size + 1)
    if len(raw) > max_size:
        raise PayloadTooLarge(f"request body larger than {max_size} bytes")
    if not raw.strip():
        raise InvalidInput("the request body is empty; expected JSON")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("the request body is not valid JSON", str(exc)) from None


async def read_object(request: web.Request, max_size: int = MAX_JSON_BODY) -> dict[str, Any]:
    data = await read_json(request, max_size)
    if not isinstance(data, dict):
        raise InvalidInput("expected a JSON object")
    return data


def reason_of(body: dict[str, Any]) -> str:
    """The optional "reason" of a lock or of safety mode: printable text, at most 500 chars."""
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500 or not reason.isprintable():
        raise InvalidInput("reason must be printable text of at most 500 characters")
    return reason.strip()


def int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """Query parameter ``name`` as an integer within [lo, hi]; ``default`` when absent."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}")
    return value
