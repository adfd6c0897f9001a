"""``dragonfly status``: what is installed, what runs, what listens, machines by state — read from
the real /proc and a real (read-only) database, never changing either."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dragonfly import __version__
from dragonfly.config import Config, render_toml
from dragonfly.domain.model import Machine, State
from dragonfly.ops.install import CONFIG, STATE_DIR
from dragonfly.ops.plan import CommandResult
from dragonfly.ops.status import (
    _decode_address,
    cmd_status,
    collect_status,
    expected_services,
    format_status,
    read_listeners,
)
from dragonfly.store.migrations import migrate
from tests.conftest import free_port
from tests.test_install import FakeRunner, fake_zipapp, run_install, seed_v1_database


def test_proc_net_addresses_decode() -> None:
    assert _decode_address("0100007F:0BB8") == ("127.0.0.1", 3000)
    assert _decode_address("00000000:0043") == ("0.0.0.0", 67)
    assert _decode_address("00000000000000000000000001000000:0016") == ("::1", 22)
    assert _decode_address("0000000000000000FFFF00000100007F:1F90") == ("127.0.0.1", 8080)


@pytest.fixture
def sockets() -> Iterator[dict[str, int]]:
    """A TCP listener on IPv4 and IPv6 loopback and a bound UDP socket, held by this process."""
    tcp4 = socket.socket()
    tcp6 = socket.socket(socket.AF_INET6)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp4.bind(("127.0.0.1", 0))
        tcp4.listen()
        tcp6.bind(("::1", 0))
        tcp6.listen()
        udp.bind(("127.0.0.1", 0))
        yield {"tcp4": tcp4.getsockname()[1], "tcp6": tcp6.getsockname()[1],
               "udp": udp.getsockname()[1]}
    finally:
        for s in (tcp4, tcp6, udp):
            s.close()


def test_listeners_are_read_from_proc_with_their_process(sockets: dict[str, int]) -> None:
    found = read_listeners()
    me = os.getpid()

    def one(proto: str, address: str, port: int) -> str:
        matches = [x for x in found if (x.proto, x.address, x.port) == (proto, address, port)]
        assert len(matches) == 1, (proto, address, port)
        assert me in matches[0].pids
        return str(matches[0])

    assert one("tcp", "127.0.0.1", sockets["tcp4"]).startswith(f"tcp 127.0.0.1:{sockets['tcp4']}")
    assert one("tcp", "::1", sockets["tcp6"]).startswith(f"tcp [::1]:{sockets['tcp6']}")
    assert f"({me})" in one("udp", "127.0.0.1", sockets["udp"])
    # A connected TCP socket (not listening) is not a service.
    with socket.create_connection(("127.0.0.1", sockets["tcp4"])) as client:
        local_port = client.getsockname()[1]
        assert not any(x.port == local_port for x in read_listeners(with_owners=False))


def _installed(tmp_path: Path, port: int, **opts: object) -> Path:
    root = tmp_path / "root"
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), port=port, **opts)
    assert code == 0, out
    return root


def _seed(db_path: Path, states: list[State]) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(db_path)
    try:
        migrate(db)
        with db:
            for n, state in enumerate(states):
                machine = Machine(id=f"m{n}", name=f"m{n}", state=state,
                                  mac=f"52:54:00:00:00:{n:02x}")
                db.execute("INSERT INTO docs (kind, key, rev, data) VALUES ('machine', ?, ?, ?)",
                           (machine.id, n + 1, json.dumps(machine.to_dict())))
    finally:
        db.close()


def test_status_of_an_installation(tmp_path: Path) -> None:
    with socket.socket() as panel:
        panel.bind(("127.0.0.1", 0))
        panel.listen()
        port = panel.getsockname()[1]
        root = _installed(tmp_path, port, dhcp_mode="auto")
        db = root / STATE_DIR.lstrip("/") / "dragonfly.db"
        _seed(db, [State.READY, State.READY, State.INSTALLED, State.DEPLOYING])
        digest = hashlib.sha256(db.read_bytes()).hexdigest()
        asked: list[str] = []
        status = collect_status(root / CONFIG.lstrip("/"), root=root,
                                version_of=lambda url: asked.append(url) or "9.9.9")
    assert status.installed and status.binary and status.unit
    assert status.installed_version == __version__ and status.running_version == "9.9.9"
    assert asked == [f"http://127.0.0.1:{port}/"] and status.url == asked[0]
    assert status.service == "not checked (--root)"
    assert status.mode == "native" and status.machines == {"ready": 2, "installed": 1,
                                                          "deploying": 1}
    by_port = {(c.proto, c.port): c for c in status.services}
    assert set(by_port) == {("tcp", port), ("udp", 67), ("udp", 4011), ("udp", 69)}
    assert by_port["tcp", port].listeners == [f"tcp 127.0.0.1:{port} by "
                                              f"{_comm()} ({os.getpid()})"]
    assert status.problems == []
    text = format_status(status)
    assert "machines:  4 (1 deploying, 1 installed, 2 ready)" in text
    assert f"tcp/{port}" in text and "running:   9.9.9" in text
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest  # read-only, really


def _comm() -> str:
    return Path(f"/proc/{os.getpid()}/comm").read_text().strip()


def test_status_command_prints_json(tmp_path: Path) -> None:
    root = _installed(tmp_path, free_port())
    out = io.StringIO()
    assert cmd_status(argparse.Namespace(root=root, json=True, config=None), out) == 0
    data = json.loads(out.getvalue())
    assert data["installed"] is True and data["config_path"] == str(root / CONFIG.lstrip("/"))
    assert data["services"][0]["name"] == "panel, API and boot HTTP"
    assert any("no database yet" in p for p in data["problems"])


def test_status_asks_systemd_when_given_a_runner(tmp_path: Path) -> None:
    root = _installed(tmp_path, free_port())
    runner = FakeRunner({"systemctl is-active": CommandResult(0, "active\n"),
                         "systemctl is-enabled": CommandResult(0, "enabled\n")})
    status = collect_status(root / CONFIG.lstrip("/"), root=root, runner=runner,
                            version_of=lambda url: "")
    assert (status.service, status.enabled) == ("active", "enabled")
    assert "service:   active, enabled at boot" in format_status(status)
    assert "running:   not answering" in format_status(status)


def test_status_after_uninstall_names_what_is_missing(tmp_path: Path) -> None:
    root = _installed(tmp_path, free_port())
    for target in ("usr/local/bin/dragonfly", "etc/systemd/system/dragonfly.service"):
        (root / target).unlink()
    status = collect_status(root / CONFIG.lstrip("/"), root=root, version_of=lambda url: "")
    assert not status.binary and not status.unit
    assert sum("re-run `sudo dragonfly install`" in p for p in status.problems) == 2


def test_status_when_not_installed(tmp_path: Path) -> None:
    status = collect_status(tmp_path / "nothing.toml", root=tmp_path)
    assert not status.installed
    assert "is not installed" in format_status(status)
    assert "sudo dragonfly install" in format_status(status)


def test_status_never_migrates_an_old_database(tmp_path: Path) -> None:
    root = _installed(tmp_path, free_port())
    db = root / STATE_DIR.lstrip("/") / "dragonfly.db"
    seed_v1_database(db, Machine(id="old", name="old", state=State.FAILED,
                                 mac="52:54:00:00:00:99"))
    status = collect_status(root / CONFIG.lstrip("/"), root=root, version_of=lambda url: "")
    assert status.machines == {"failed": 1}
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    finally:
        conn.close()


def test_expected_services_follow_mode_and_dhcp(tmp_path: Path) -> None:
    def expected(**values: object) -> set[int]:
        path = tmp_path / "c.toml"
        path.write_text(render_toml({**Config.defaults().as_dict(), **values}))
        return {c.port for c in expected_services(Config.load(path, env={})) if c.expected}

    assert expected(**{"server.port": 8080}) == {8080, 67, 4011, 69}
    assert expected(**{"boot.dhcp_mode": "off"}) == {3000}  # no DHCP, so no TFTP either
    assert expected(**{"server.mode": "tinkerbell"}) == {3000}  # smee serves DHCP and TFTP
