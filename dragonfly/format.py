"""How sizes, times and durations are written for people, in one place: the panel's
templates, history lines, install plans and the agent status all use these."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def decimal_bytes(value: float | int | None) -> str:
    """Decimal units, as disk vendors and download counters use them."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"


def binary_bytes(value: float | int | None) -> str:
    """Binary units, as memory is sold and reported (512 GiB, not 549.8 GB)."""
    if not value:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if size == int(size) else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def ago(ts: float | None, now: float | None = None) -> str:
    """'12 s ago', '5 min ago' ... the same wording as app.js uses when it refreshes it."""
    if not ts:
        return "never"
    delta = max(0.0, (time.time() if now is None else now) - ts)
    if delta < 45:
        return "just now" if delta < 5 else f"{int(delta)} s ago"
    if delta < 3600:
        return f"{round(delta / 60)} min ago"
    if delta < 86400:
        return f"{round(delta / 3600)} h ago"
    return f"{round(delta / 86400)} d ago"


def elapsed(seconds: float) -> str:
    """A whole span in its largest sensible unit, rounded down: '51 s', '10 min', '3 days'."""
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h"
    return f"{s // 86_400} days"


def iso_time(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def eta(seconds: float | None) -> str:
    """A duration to the second: '42 s', '3 min 05 s', '1 h 02 min'."""
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
