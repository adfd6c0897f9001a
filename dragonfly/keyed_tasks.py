"""One background task per key (a workflow's image preparation, its submission): started at
most once while it runs, kept referenced until it ends, so the owner can cancel it or wait for
it at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def start_once(tasks: dict[str, asyncio.Task[None]], key: str,
               work: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
    """``work()`` as a task in ``tasks[key]`` unless one runs for ``key``; removed when done."""
    if key in tasks:
        return
    task = asyncio.get_running_loop().create_task(work(), name=name)
    tasks[key] = task
    task.add_done_callback(lambda _t: tasks.pop(key, None))
