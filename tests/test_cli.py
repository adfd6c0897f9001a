"""The command line: demo vs status, serve, flags, ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dragonfly import __version__
from dragonfly.cli import bind_first_free
from dragonfly.commands import build_parser
from dragonfly.errors import DragonflyError
from tests.conftest import free_port, wait_http


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dragonfly", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.strip() == f"dragonfly {__version__}"
    assert run_cli("version").stdout.strip() == f"dragonfly {__version__}"
    help_text = run_cli("--help").stdout
    for word in ("--demo", "--bind", "--port", "serve", "status"):
        assert word in help_text
    serve_help = run_cli("serve", "--help").stdout
    for flag in ("--state-dir", "--bind", "--port", "--boot-interface", "--dhcp-mode"):
        assert flag in serve_help


def test_bare_dragonfly_when_installed_prints_status(tmp_path: Path) -> None:
    config = tmp_path / "dragonfly.toml"
    config.write_text(f'[server]\nport = 3123\nstate_dir = "{tmp_path / "state"}"\n')
    result = run_cli(env={"DRAGONFLY_CONFIG": str(config)})
    assert result.returncode == 0
    assert "panel:" in result.stdout and ":3123/" in result.stdout
    assert "Demo Mode" not in result.stdout


def test_status_when_not_installed(tmp_path: Path) -> None:
    result = run_cli("status", env={"DRAGONFLY_CONFIG": str(tmp_path / "none.toml")})
    assert "not installed" in result.stdout


def test_bare_dragonfly_without_install_starts_the_demo(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dragonfly", "--port", str(port)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "DRAGONFLY_CONFIG": str(tmp_path / "none.toml")})
    try:
        wait_http(f"http://127.0.0.1:{port}/api/version", 30, proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/" in out
    assert "Demo Mode: Dragonfly is not installed yet." in out
    assert proc.returncode == 0


def test_demo_takes_the_next_free_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sock = bind_first_free("127.0.0.1", port, 20)
        try:
            assert sock.getsockname()[1] > port
        finally:
            sock.close()
        with pytest.raises(DragonflyError, match="no free port"):
            bind_first_free("127.0.0.1", port, 1)


def test_serve_runs_from_flags_and_keeps_state(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dragonfly", "serve", "--state-dir", str(state), "--bind",
         "127.0.0.1", "--port", str(port), "--dhcp-mode", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "DRAGONFLY_CONFIG": str(tmp_path / "none.toml")})
    try:
        wait_http(f"http://127.0.0.1:{port}/api/version", 30, proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert (state / "dragonfly.db").exists()
    assert f"http://127.0.0.1:{port}/" in out


def test_serve_reports_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--state-dir", str(tmp_path), "--bind", "127.0.0.1",
                         "--port", str(port), "--dhcp-mode", "off",
                         env={"DRAGONFLY_CONFIG": str(tmp_path / "none.toml")})
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 'many'\n")
    result = run_cli("serve", env={"DRAGONFLY_CONFIG": str(config)})
    assert result.returncode == 2
    assert "server.port" in result.stderr and "Traceback" not in result.stderr


def test_parser_rejects_unknown_dhcp_mode() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--dhcp-mode", "sometimes"])


def test_parser_builds_for_a_user_without_a_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's user may have no resolvable home (no HOME, no passwd entry): the parser,
    built on every start, must not depend on one."""
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    monkeypatch.setenv("DRAGONFLY_SERVER_STATE_DIR", "/srv/df")
    args = build_parser().parse_args(["serve", "--port", "3001"])
    assert args.command == "serve" and args.serve_port == 3001
    from dragonfly.boot.discovery_image import default_cache

    assert default_cache() == Path("/srv/df/cache/discovery")
