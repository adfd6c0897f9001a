"""``dragonfly user|token|security`` against a running server's database, and the setup token
that ``dragonfly serve`` prints: the recovery path an operator takes from the server's shell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_http

ADMIN_PASSWORD = "admin password 1"


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    state: Path
    token: str
    output: list[str]


def cli(state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dragonfly", *args, "--state-dir", str(state)],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DRAGONFLY_CONFIG": "/nonexistent.toml"})


def start(state: Path) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dragonfly", "serve", "--state-dir", str(state), "--bind",
         "127.0.0.1", "--port", str(port), "--dhcp-mode", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "DRAGONFLY_CONFIG": "/nonexistent.toml"})
    lines: list[str] = []

    def pump() -> None:  # a thread drains the output so the server never blocks on it
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/api/version", 60, proc)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("serving on" in line for line in lines):
        time.sleep(0.05)
    time.sleep(0.3)  # the banner is one write: its setup lines follow at once if any
    match = re.search(r"Setup token: (\S+)", "".join(lines))
    return Server(proc, url, state, match.group(1) if match else "", lines)


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def request(server: Server, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def session_of(headers: dict[str, str]) -> dict[str, str]:
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    return {"Cookie": cookie}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start(tmp_path / "state")
    try:
        yield running
    finally:
        stop(running)


def test_serve_prints_setup_token_and_cli_manages_a_running_instance(server: Server) -> None:
    assert server.token, "".join(server.output)
    status, data, _ = request(server, "GET", "/api/machines")
    assert status == 403 and data["detail"]["refused"] == "setup"
    status, data, headers = request(server, "POST", "/api/setup", {
        "setup_token": server.token, "name": "admin", "password": ADMIN_PASSWORD})
    assert status == 200, data
    admin = session_of(headers)
    assert request(server, "GET", "/api/machines", headers=admin)[0] == 200
    # The database holds only the token's hash.
    db_text = (server.state / "dragonfly.db").read_bytes()
    assert server.token.encode() not in db_text

    # user add / token create on the live instance take effect at once.
    result = cli(server.state, "user", "add", "bob", "--password-stdin",
                 stdin="bob password 123\n")
    assert result.returncode == 0, result.stderr
    status, data, headers = request(server, "POST", "/api/auth/login",
                                    {"name": "bob", "password": "bob password 123"})
    assert status == 200 and data["user"]["role"] == "user"
    bob = session_of(headers)
    result = cli(server.state, "token", "create", "--user", "bob", "--name", "ci",
                 "--expires-days", "7")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("dft_")
    bearer = {"Authorization": f"Bearer {token}"}
    assert request(server, "GET", "/api/machines", headers=bearer)[0] == 200
    listed = cli(server.state, "token", "list")
    assert token not in listed.stdout and '"name": "ci"' in listed.stdout
    token_id = token.split("_")[1]
    assert cli(server.state, "token", "revoke", token_id).returncode == 0
    assert request(server, "GET", "/api/machines", headers=bearer)[0] == 401

    # Lock-out recovery: an allowlist that shuts everyone out, undone from the shell.
    result = cli(server.state, "security", "set", "security.allowlist", "192.0.2.0/24")
    assert result.returncode == 0, result.stderr
    status, data, _ = request(server, "GET", "/api/machines", headers=admin)
    assert status == 403 and data["detail"]["refused"] == "allowlist"
    assert cli(server.state, "security", "reset").returncode == 0
    assert request(server, "GET", "/api/machines", headers=admin)[0] == 200
    assert cli(server.state, "security", "set", "security.allowlist",
               "not-a-cidr").returncode == 2
    # The boot networks, set from the shell: boot routes refuse this address, the panel not.
    result = cli(server.state, "security", "set", "boot.allowed_networks",
                 "192.0.2.0/24,2001:db8::/32")
    assert result.returncode == 0, result.stderr
    assert '["192.0.2.0/24", "2001:db8::/32"]' in result.stdout
    beat = {"machine_id": "unknown"}
    status, data, _ = request(server, "POST", "/api/agent/heartbeat", beat)
    assert status == 403 and data["detail"]["refused"] == "boot_networks"
    assert request(server, "GET", "/api/machines", headers=admin)[0] == 200
    shown = cli(server.state, "security", "show").stdout
    assert 'boot.allowed_networks = ["192.0.2.0/24", "2001:db8::/32"]  (panel)' in shown
    assert cli(server.state, "security", "reset", "boot.allowed_networks").returncode == 0
    status, data, _ = request(server, "POST", "/api/agent/heartbeat", beat)
    assert status == 404, data  # reached: this machine is unknown
    assert cli(server.state, "security", "set", "boot.allowed_networks",
               "10.0.0.0/33").returncode == 2

    # A forgotten password: set a new one; the old sessions end.
    result = cli(server.state, "user", "passwd", "admin", "--generate")
    assert result.returncode == 0, result.stderr
    new_password = result.stdout.split("password: ", 1)[1].strip()
    assert request(server, "GET", "/api/machines", headers=admin)[0] == 401
    status, _, headers = request(server, "POST", "/api/auth/login",
                                 {"name": "admin", "password": new_password})
    assert status == 200
    admin = session_of(headers)
    assert cli(server.state, "user", "reset-mfa", "bob").returncode == 0
    assert cli(server.state, "user", "remove", "bob").returncode == 0
    assert request(server, "GET", "/api/machines", headers=bob)[0] == 401
    refused = cli(server.state, "user", "remove", "admin")
    assert refused.returncode == 2 and "last administrator" in refused.stderr
    assert cli(server.state, "security", "safety", "on", "--reason", "freeze").returncode == 0
    status, data, _ = request(server, "GET", "/api/safety", headers=admin)
    assert data["enabled"] is True and data["reason"] == "freeze"
    # Every CLI act is in the audit log, by the shell user.
    status, entries, _ = request(server, "GET", "/api/audit?limit=100", headers=admin)
    cli_actions = {e["action"] for e in entries if e["via"] == "cli"}
    assert {"user.create", "token.create", "token.revoke", "settings.change", "settings.reset",
            "user.password", "mfa.reset", "user.remove", "safety.on"} <= cli_actions
    assert all(e["actor"].startswith("cli:") for e in entries if e["via"] == "cli")


def test_cli_on_a_stopped_instance_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # Scripted install: an admin made from the shell before the first start completes setup.
    result = cli(state, "user", "add", "root", "--role", "admin", "--password-stdin",
                 stdin=f"{ADMIN_PASSWORD}\n")
    assert result.returncode == 0, result.stderr
    assert "root\tadmin" in cli(state, "user", "list").stdout
    assert cli(state, "user", "add", "x", "--password-stdin", stdin="short\n").returncode == 2
    missing = cli(tmp_path / "elsewhere", "user", "list")
    assert missing.returncode == 2 and "no Dragonfly database" in missing.stderr
    running = start(state)
    try:
        assert running.token == ""  # setup is complete: no token printed
        assert "Setup token" not in "".join(running.output)
        status, _, _ = request(running, "POST", "/api/auth/login",
                               {"name": "root", "password": ADMIN_PASSWORD})
        assert status == 200
    finally:
        stop(running)
