"""Shared fixtures: the built zipapp, a running demo process, and clean app contexts."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZIPAPP = ROOT / "dist" / "dragonfly"
ARTIFACTS = ROOT / "test-artifacts"


def _newest_source_mtime() -> float:
    newest = 0.0
    for top in ("dragonfly", "web", "ipxe"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return max(newest, (ROOT / "pyproject.toml").stat().st_mtime,
               (ROOT / "build_zipapp.py").stat().st_mtime)


@pytest.fixture(scope="session")
def zipapp() -> Path:
    """dist/dragonfly, rebuilt when any source is newer than it."""
    if not ZIPAPP.exists() or ZIPAPP.stat().st_mtime < _newest_source_mtime():
        subprocess.run([sys.executable, str(ROOT / "build_zipapp.py")], check=True, cwd=ROOT)
    return ZIPAPP


@pytest.fixture(scope="session")
def shiv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One unpack cache for the whole session, kept apart from the demo's own directories."""
    return tmp_path_factory.mktemp("shiv-root")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
              ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class DemoProcess:
    proc: subprocess.Popen[bytes]
    url: str
    home: Path
    tmpdir: Path
    cwd: Path
    log: Path


@pytest.fixture
def demo_process(zipapp: Path, shiv_root: Path, tmp_path: Path) -> Iterator[DemoProcess]:
    """The built zipapp running the demo with empty HOME, TMPDIR and working directory."""
    home, tmpdir, cwd = tmp_path / "home", tmp_path / "tmp", tmp_path / "cwd"
    for d in (home, tmpdir, cwd):
        d.mkdir()
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "TMPDIR": str(tmpdir), "SHIV_ROOT": str(shiv_root), "LANG": "C.UTF-8",
           "DRAGONFLY_CONFIG": str(tmp_path / "no-such-config.toml")}
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(zipapp), "--port", str(port)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/version", 60, proc)
        yield DemoProcess(proc, url, home, tmpdir, cwd, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Leaked asyncio tasks: a task still pending when its loop is closed was never stopped by
# whoever started it. asyncio's Runner (which pytest-asyncio and asyncio.run use) cancels such
# tasks quietly on close; note them first, and fail the test in its teardown.
_LEAKED_TASKS: list[str] = []
_cancel_all_tasks = asyncio.runners._cancel_all_tasks  # type: ignore[attr-defined]


def _cancel_all_tasks_noting_leaks(loop: asyncio.AbstractEventLoop) -> None:
    _LEAKED_TASKS.extend(f"{task.get_name()} ({task.get_coro()!r})"
                         for task in asyncio.all_tasks(loop) if not task.done())
    _cancel_all_tasks(loop)


asyncio.runners._cancel_all_tasks = _cancel_all_tasks_noting_leaks  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _LEAKED_TASKS.clear()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield  # every fixture finalised: the test's event loop is closed
    if _LEAKED_TASKS:
        leaked = sorted(set(_LEAKED_TASKS))
        _LEAKED_TASKS.clear()
        raise AssertionError(f"asyncio tasks leaked by this test (still pending when its "
                             f"event loop closed): {leaked}")
    return result


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads behind (sqlite executors, TFTP/DHCP workers ...)."""
    import threading

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
                  # asyncio's default executor is shut down with its loop, which pytest-asyncio
                  # closes after fixtures finalise.
                  and not t.name.startswith("asyncio_")]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked by this test: {[t.name for t in leaked]}")
