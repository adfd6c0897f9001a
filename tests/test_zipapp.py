"""The built ``dist/dragonfly``: the demo writes nothing and listens only on loopback HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DemoProcess

pytestmark = pytest.mark.zipapp


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def send(url: str, method: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def exercise(url: str) -> None:
    for path in ("/", "/machines", "/tags", "/docs", "/docs/settings", "/api/openapi.json",
                 "/api/stats", "/api/tags", "/api/workflows"):
        status, _ = get(url + path)
        assert status == 200, path
    listing = json.loads(get(url + "/api/machines")[1])
    machine = listing["items"][0]
    assert get(f"{url}/machines/{machine['id']}")[0] == 200
    status, edited = send(f"{url}/api/machines/{machine['id']}/tags", "PUT",
                          {"tags": [*machine["tags"], "written-nowhere"]})
    assert status == 200 and "written-nowhere" in edited["tags"]
    ready = json.loads(get(url + "/api/machines?state=ready")[1])["items"]
    if ready:
        status, _ = send(f"{url}/api/machines/{ready[0]['id']}/actions/deploy", "POST",
                         {"template": "debian-12"})
        assert status == 200


def read_events(url: str, wanted: int, seconds: float = 15.0) -> list[bytes]:
    """The first ``wanted`` data lines of the SSE stream (the simulator keeps it busy)."""
    data: list[bytes] = []
    deadline = time.monotonic() + seconds
    with urllib.request.urlopen(url + "/api/events", timeout=seconds) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        while len(data) < wanted and time.monotonic() < deadline:
            line = response.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                data.append(line)
    return data


def sockets_of(pid: int) -> dict[str, list[dict[str, str]]]:
    """The process's inet sockets by protocol, from /proc (no external tools)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: dict[str, list[dict[str, str]]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        with open(f"/proc/{pid}/net/{proto}") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        for row in rows:
            if row[9] in inodes:
                found.setdefault(proto, []).append(
                    {"local": row[1], "remote": row[2], "state": row[3]})
    return found


def files_open_for_writing(pid: int) -> list[str]:
    writable = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                fields = dict(line.split(":", 1) for line in info if ":" in line)
            flags = int(fields["flags"].strip(), 8)
        except OSError:
            continue
        if target.startswith("/") and flags & (os.O_WRONLY | os.O_RDWR):
            writable.append(target)
    return writable


def test_demo_writes_nothing_and_listens_only_on_loopback(demo_process: DemoProcess,
                                                          shiv_root: Path) -> None:
    exercise(demo_process.url)
    assert len(read_events(demo_process.url, wanted=3)) == 3, "no live events from the demo"
    for directory in (demo_process.home, demo_process.tmpdir, demo_process.cwd):
        assert list(directory.iterdir()) == [], f"the demo wrote into {directory}"
    sockets = sockets_of(demo_process.proc.pid)
    assert set(sockets) == {"tcp"}, f"unexpected sockets: {sockets}"
    listening = [s for s in sockets["tcp"] if s["state"] == "0A"]
    port = int(demo_process.url.rsplit(":", 1)[1])
    assert [s["local"] for s in listening] == [f"0100007F:{port:04X}"]
    assert all(s["local"].startswith("0100007F:") for s in sockets["tcp"])
    log = demo_process.log
    writable = [p for p in files_open_for_writing(demo_process.proc.pid)
                if p not in (str(log), "/dev/null") and not p.startswith(str(shiv_root))]
    assert writable == [], f"files open for writing: {writable}"
    assert "Demo Mode" in log.read_text()
    # Nothing is left behind on the way out either (no state saved at shutdown).
    demo_process.proc.terminate()
    demo_process.proc.wait(10)
    for directory in (demo_process.home, demo_process.tmpdir, demo_process.cwd):
        assert list(directory.iterdir()) == [], f"the demo left files in {directory} on exit"


def test_version_and_help_from_the_zipapp(zipapp: Path, shiv_root: Path) -> None:
    env = {**os.environ, "SHIV_ROOT": str(shiv_root)}
    result = subprocess.run([str(zipapp), "--version"], capture_output=True, text=True,
                            env=env, check=True)
    from dragonfly import __version__

    assert result.stdout.strip() == f"dragonfly {__version__}"
    result = subprocess.run([str(zipapp), "--help"], capture_output=True, text=True, env=env,
                            check=True)
    assert "serve" in result.stdout and "--demo" in result.stdout


def test_zipapp_records_its_interpreter(zipapp: Path) -> None:
    import zipfile

    with zipfile.ZipFile(zipapp) as archive:
        record = json.loads(archive.read("site-packages/dragonfly/_build.json"))
        start = set(zipfile.ZipFile(archive.open("site-packages/_start.zip")).namelist())
    assert record["python"] == [3, 11] and record["machine"]
    # The panel's files: in _start.zip (build_zipapp.START_ZIPPED), read from there.
    assert any(n.startswith("dragonfly/web/templates/") for n in start)
    assert any(n.startswith("dragonfly/web/static/") for n in start)
    assert zipapp.stat().st_mode & 0o111


def test_build_is_reproducible(zipapp: Path, tmp_path: Path) -> None:
    import hashlib
    import sys

    from tests.conftest import ROOT

    other = tmp_path / "again"
    subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "-o", str(other)],
                   check=True, cwd=ROOT, capture_output=True)
    assert hashlib.sha256(other.read_bytes()).hexdigest() == hashlib.sha256(
        zipapp.read_bytes()).hexdigest()


def test_the_readmes_demo_command_takes_extra_arguments(zipapp: Path, shiv_root: Path,
                                                         tmp_path: Path) -> None:
    """`./scripts/demo --port N`, as the README shows it: build, then the demo on port N."""
    from tests.conftest import ROOT, free_port, wait_http

    port = free_port()
    env = {**os.environ, "SHIV_ROOT": str(shiv_root), "HOME": str(tmp_path),
           "DRAGONFLY_CONFIG": str(tmp_path / "no-such-config.toml")}
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / "scripts" / "demo"), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/version", 180, proc)
        status, body = get(f"http://127.0.0.1:{port}/api/stats")
        assert status == 200 and json.loads(body)["total"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
    assert f"127.0.0.1:{port}" in log.read_text()


# --- the iPXE loaders: always bundled, or a deliberate, loud --no-loaders ---------------------

LOADERS_IN_ZIPAPP = "site-packages/dragonfly/ipxe/loaders/"


def _build(*args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    import sys

    from tests.conftest import ROOT

    return subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=900)


def test_build_without_installed_ipxe_downloads_the_package(tmp_path: Path) -> None:
    """A machine without /usr/lib/ipxe (an empty --loader-root): the build runs the real
    `apt-get download ipxe` into its cache, unpacks it and bundles the loaders with the
    Debian version it got."""
    import zipfile

    empty, cache, output = tmp_path / "no-ipxe-here", tmp_path / "debs", tmp_path / "dragonfly"
    empty.mkdir()
    done = _build("--loader-root", str(empty), "--deb-cache", str(cache),
                  "-o", str(output))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "apt-get download" in done.stdout and "cannot PXE-boot" not in done.stderr
    (deb,) = cache.glob("ipxe_*.deb")
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    with zipfile.ZipFile(output) as archive:
        versions = archive.read(LOADERS_IN_ZIPAPP + "VERSIONS.txt").decode()
        assert f"package: ipxe {version} (Debian source package ipxe)" in versions
        for name, inside in (("undionly.kpxe", "usr/lib/ipxe/undionly.kpxe"),
                             ("ipxe.efi", "boot/ipxe.efi"),  # the package links it there
                             ("snponly.efi", "usr/lib/ipxe/snponly.efi")):
            assert archive.read(LOADERS_IN_ZIPAPP + name) == (unpacked / inside).read_bytes()


def test_build_fails_clearly_when_the_loaders_cannot_be_had(tmp_path: Path) -> None:
    """Neither installed nor downloadable. The apt-get here is a stand-in exiting 100 as apt
    does when the archive is unreachable (the real one would succeed on this machine)."""
    import os

    empty, fake_bin = tmp_path / "no-ipxe-here", tmp_path / "bin"
    empty.mkdir()
    fake_bin.mkdir()
    (fake_bin / "apt-get").write_text("#!/bin/sh\necho 'E: Failed to fetch (fake apt-get of "
                                      "the test)' >&2\nexit 100\n")
    (fake_bin / "apt-get").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    output = tmp_path / "dragonfly"
    done = _build("--loader-root", str(empty), "--deb-cache", str(tmp_path / "debs"),
                  "-o", str(output), env=env)
    assert done.returncode != 0
    assert not output.exists()
    assert "error: cannot bundle the iPXE loaders: `apt-get download ipxe` failed (100)" \
        in done.stderr
    assert "E: Failed to fetch (fake apt-get of the test)" in done.stderr
    assert "`sudo apt-get install ipxe`" in done.stderr
    assert "could not PXE-boot anything" in done.stderr
    assert "`python3 build_zipapp.py --no-loaders`" in done.stderr
    assert "warning" not in done.stderr.lower()


def test_no_loaders_build_says_so_and_install_refuses_it(tmp_path: Path,
                                                         shiv_root: Path) -> None:
    import os
    import zipfile

    output = tmp_path / "dragonfly"
    done = _build("--no-loaders", "-o", str(output))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"NOTE: {output} has no iPXE loaders (--no-loaders): it CANNOT PXE-boot anything" \
        in done.stderr
    with zipfile.ZipFile(output) as archive:
        assert not [n for n in archive.namelist() if n.startswith(LOADERS_IN_ZIPAPP)]
    root = tmp_path / "root"
    root.mkdir()
    env = {"PATH": os.environ["PATH"], "SHIV_ROOT": str(shiv_root), "LANG": "C.UTF-8"}
    refused = subprocess.run([str(output), "install", "--root", str(root), "--dry-run"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "was built without the iPXE boot loaders" in refused.stdout
    assert list(root.iterdir()) == []
