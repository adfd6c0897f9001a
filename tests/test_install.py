"""``dragonfly install`` / ``uninstall``: into ``--root`` directories, with the machine faked only
where the real one would be changed (systemctl, useradd, k3s), and against real peers where it
can be done safely: systemd-analyze on the unit, the installed zipapp serving, dnsmasq as the DHCP
server the probe must find (in a namespace)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import tomllib
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dragonfly import __version__
from dragonfly.config import SETTINGS, Config
from dragonfly.domain.model import Machine, State
from dragonfly.ops.checks import SYSTEMD_PATH
from dragonfly.ops.install import (
    BINARY,
    CONFIG,
    STATE_DIR,
    UNIT,
    InstallOptions,
    System,
    install,
    uninstall,
    unit_text,
)
from dragonfly.ops.plan import CommandResult
from dragonfly.ops.tinkerbell import (
    CHART,
    HELMCHART,
    K3S_CONFIG,
    KUBECONFIG,
    TinkerbellSettings,
    render_helmchart,
    render_k3s_config,
)
from dragonfly.store.migrations import LATEST, migrate
from tests.conftest import ROOT, free_port, wait_http

PY_QUERY = "import sys; print('%d.%d' % sys.version_info[:2])"


# --- helpers ----------------------------------------------------------------------------------

def require_lab(*tools: str) -> None:
    """Skip with DRAGONFLY_SKIP_LAB=1; otherwise a missing tool or privilege is a failure."""
    if os.environ.get("DRAGONFLY_SKIP_LAB") == "1":
        pytest.skip("lab tests disabled by DRAGONFLY_SKIP_LAB=1")
    if os.geteuid() != 0:
        pytest.fail("this test needs root (or set DRAGONFLY_SKIP_LAB=1)")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: install the Debian package that has it "
                        "(or set DRAGONFLY_SKIP_LAB=1)")


BUNDLED_LOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")  # what every build carries


def fake_zipapp(path: Path, build_id: str = "fake-build-1", python: Sequence[int] = (3, 11),
                loaders: Sequence[str] = BUNDLED_LOADERS) -> Path:
    """A small file shaped like our zipapp (shebang + zip with shiv's and our build records,
    the loader manifest and, as stand-ins, the loaders named in ``loaders``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("environment.json", json.dumps({"build_id": build_id}))
        zf.writestr("site-packages/dragonfly/_build.json",
                    json.dumps({"version": __version__, "python": list(python)}))
        ipxe = "site-packages/dragonfly/ipxe/"
        zf.writestr(ipxe + "manifest.toml", (ROOT / "ipxe/manifest.toml").read_text())
        for name in loaders:
            zf.writestr(f"{ipxe}loaders/{name}", f"fake {name}")
        zf.writestr("__main__.py", "raise SystemExit('fake zipapp')\n")
    path.write_bytes(b"#!/usr/bin/env python3\n" + buf.getvalue())
    path.chmod(0o755)
    return path


@dataclass
class FakeRunner:
    """Stands in for the machine's commands: records them, answers from a script.

    ``answers`` maps a command prefix to one result or a list consumed in order (the last one
    repeats). Unknown commands succeed silently, except that the interpreter-version query
    answers 3.11 like Debian 12's python3.
    """

    answers: dict[str, CommandResult | list[CommandResult]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, timeout: float = 120.0,
                 env: Any = None) -> CommandResult:
        self.calls.append(list(argv))
        line = " ".join(argv)
        for prefix, answer in self.answers.items():
            if line.startswith(prefix):
                if isinstance(answer, list):
                    return answer.pop(0) if len(answer) > 1 else answer[0]
                return answer
        if list(argv[1:]) == ["-c", PY_QUERY]:
            return CommandResult(0, "3.11\n")
        return CommandResult(0)

    def ran(self, prefix: str) -> bool:
        return any(" ".join(c).startswith(prefix) for c in self.calls)

    def commands(self) -> list[str]:
        return [" ".join(c) for c in self.calls]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def live_system(root: Path, runner: FakeRunner, **kw: Any) -> System:
    """A System that believes ``root`` is this machine, with every live effect faked."""
    for d in ("usr/bin",):
        (root / d).mkdir(parents=True, exist_ok=True)
    python3 = root / "usr/bin/python3"  # what `#!/usr/bin/env python3` resolves to there
    python3.write_text("#!/bin/sh\nexit 1\n")
    python3.chmod(0o755)
    clock = FakeClock()
    defaults: dict[str, Any] = dict(
        live=True, runner=runner, euid=lambda: 0, has_systemd=lambda: True,
        dhcp_probe=lambda interface, timeout: [], wait_http=lambda url, timeout, out: True,
        interactive=lambda: False, confirm=lambda q: False, ipv4_of=lambda name: "192.0.2.10",
        sleep=clock.sleep, clock=clock)
    defaults.update(kw)
    return System(**defaults)


def offline_system(**kw: Any) -> System:
    """The System a real ``--root`` install gets (nothing live), with interaction faked."""
    defaults: dict[str, Any] = dict(live=False, interactive=lambda: False,
                                    confirm=lambda q: False)
    defaults.update(kw)
    return System(**defaults)


def run_install(root: Path, binary: Path, system: System | None = None, **opts: Any
                ) -> tuple[int, str]:
    out = io.StringIO()
    code = install(InstallOptions(root=root, binary=binary, yes=True, **opts),
                   system or offline_system(), out)
    return code, out.getvalue()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def manifest(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "etc/dragonfly/install.json").read_text())
    return data


def entry(root: Path, target: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in manifest(root)["files"] if f["path"] == target)
    return found


def seed_v1_database(db_path: Path, machine: Machine) -> None:
    """A database as an older Dragonfly left it: schema version 1, one machine."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(db_path)
    try:
        migrate(db, target=1)
        with db:
            db.execute("INSERT INTO docs (kind, key, rev, data) VALUES ('machine', ?, 1, ?)",
                       (machine.id, json.dumps(machine.to_dict())))
            db.execute("UPDATE meta SET value = '1' WHERE key = 'revision'")
    finally:
        db.close()


# --- the unit file ----------------------------------------------------------------------------

def test_packaged_unit_is_the_repository_file() -> None:
    assert (ROOT / "dragonfly.service").read_text() == unit_text()
    assert unit_text() == (ROOT / "dragonfly/data/dragonfly.service").read_text()


def test_unit_has_the_hardening_the_issue_asks_for() -> None:
    lines = {line.strip() for line in unit_text().splitlines()}
    for wanted in ("User=dragonfly", "Group=dragonfly", "ProtectSystem=strict",
                   "ReadWritePaths=/var/lib/dragonfly", "PrivateTmp=yes", "NoNewPrivileges=yes",
                   "Environment=SHIV_ROOT=/var/lib/dragonfly/shiv", "Restart=on-failure",
                   "ExecStart=/usr/local/bin/dragonfly serve --config "
                   "/etc/dragonfly/dragonfly.toml", "MemoryDenyWriteExecute=yes"):
        assert wanted in lines, wanted
    caps = {"CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_NET_BROADCAST"}
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        values = [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]
        assert len(values) == 1 and set(values[0].split()) == caps, key
    assert not any(line.startswith(("StandardOutput=", "StandardError=")) for line in lines), \
        "logs go to the journal (systemd's default)"


def test_systemd_analyze_verifies_the_installed_unit_and_rates_it_ok(
        tmp_path: Path) -> None:
    for tool in ("systemd-analyze", "systemctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: install Debian's systemd package")
    root = tmp_path / "root"
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), port=free_port(),
                            no_start=True)
    assert code == 0, out
    # verify --root resolves the unit's dependencies (sysinit.target ...) inside the root: give
    # it the system's units. The unit's ExecStart binary is the one install put there.
    units = Path("/lib/systemd/system")
    shutil.copytree(units, root / "lib/systemd/system", symlinks=True)
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify
    # And it does notice a broken unit: a missing binary, an unknown directive.
    (root / BINARY.lstrip("/")).rename(tmp_path / "moved")
    broken = subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT],
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "not executable" in broken.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                               str(root / UNIT.lstrip("/"))],
                              capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stderr
    match = re.search(r"Overall exposure level for dragonfly.service: ([0-9.]+) (\w+)",
                      security.stdout)
    assert match, security.stdout
    exposure, verdict = float(match.group(1)), match.group(2)
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts/dragonfly-service-security.txt").write_text(security.stdout)
    # 1.6 when written; "OK" is systemd's band up to 4.x. Fail on any real regression.
    assert exposure <= 2.0 and verdict in ("OK", "SAFE", "PERFECT"), (exposure, verdict)
    # The figure the README and the unit's header quote is the one measured here.
    quoted = f"{exposure:.1f} {verdict}"
    assert f"`systemd-analyze security`: {quoted}" in (ROOT / "README.md").read_text()
    assert f"(`systemd-analyze security dragonfly`): {quoted}" in (
        ROOT / "dragonfly.service").read_text()


# --- install into a root ----------------------------------------------------------------------

def test_dry_run_prints_every_file_and_action_and_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), dry_run=True,
                            mode="tinkerbell", interface="lo", port=free_port())
    assert code == 0, out
    assert list(root.iterdir()) == []
    for target in (CONFIG, STATE_DIR, BINARY, UNIT, "/etc/dragonfly/install.json", K3S_CONFIG,
                   HELMCHART, KUBECONFIG, "useradd", "systemctl", "enable", "get.k3s.io"):
        assert target in out, target
    assert "[skipped: --root is not this machine]" in out


@pytest.mark.zipapp
def test_dry_run_of_the_zipapp_itself(zipapp: Path, shiv_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    env = {"PATH": os.environ["PATH"], "SHIV_ROOT": str(shiv_root), "LANG": "C.UTF-8"}
    done = subprocess.run([str(zipapp), "install", "--root", str(root), "--dry-run",
                           "--port", str(free_port())], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"from {zipapp.resolve()}" in done.stdout  # copies the running zipapp
    assert list(root.iterdir()) == []


def test_install_writes_files_with_modes_and_contents(tmp_path: Path) -> None:
    root, binary = tmp_path / "root", fake_zipapp(tmp_path / "dragonfly")
    port = free_port()
    code, out = run_install(root, binary, port=port, dhcp_mode="selective", interface="lo")
    assert code == 0, out
    # Binary: the zipapp, byte for byte, executable.
    installed = root / BINARY.lstrip("/")
    assert installed.read_bytes() == binary.read_bytes() and mode(installed) == 0o755
    # Config: every setting present with its help, the options applied, loadable.
    config_file = root / CONFIG.lstrip("/")
    assert mode(config_file) == 0o640 and mode(config_file.parent) == 0o750
    text = config_file.read_text()
    doc = tomllib.loads(text)
    for setting in SETTINGS:
        assert setting.name in doc[setting.section], setting.key
        assert f"# {setting.help}" in text, setting.key
    config = Config.load(config_file, env={})
    assert (config["server.port"], config["boot.dhcp_mode"], config["boot.interface"],
            config["server.mode"]) == (port, "selective", "lo", "native")
    # State directory and unit.
    assert mode(root / STATE_DIR.lstrip("/")) == 0o750
    unit = root / UNIT.lstrip("/")
    assert unit.read_text() == unit_text() and mode(unit) == 0o644
    # Enabled inside the root (systemctl --root), without touching this machine's systemd.
    wants = root / "etc/systemd/system/multi-user.target.wants/dragonfly.service"
    assert wants.is_symlink() and str(wants.readlink()) == UNIT
    # The manifest: intended owners, honest about what could not be applied under --root.
    record = manifest(root)
    assert record["version"] == __version__ and record["live"] is False
    assert entry(root, STATE_DIR)["owner"] == "dragonfly:dragonfly"
    assert entry(root, CONFIG)["owner"] == "root:dragonfly"
    assert entry(root, BINARY)["owner"] == "root:root"
    assert entry(root, BINARY)["sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    assert entry(root, STATE_DIR)["owner_applied"] is False  # no dragonfly user in the root
    statuses = {" ".join(c["argv"][:2]): c["status"] for c in record["commands"]}
    assert statuses["useradd --system"] == "skipped (--root)"
    assert statuses[f"systemctl --root={root}"] == "ran"  # enabled inside the root
    assert statuses["systemctl restart"] == "skipped (--root)"


@pytest.mark.lab
def test_owners_come_from_the_target_systems_passwd(tmp_path: Path) -> None:
    require_lab()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "dragonfly:x:64123:64124::/var/lib/dragonfly:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\ndragonfly:x:64124:\n")
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), port=free_port())
    assert code == 0, out
    owners = {t: (p.stat().st_uid, p.stat().st_gid) for t in (STATE_DIR, CONFIG, "/etc/dragonfly",
                                                               BINARY, UNIT)
              for p in [root / t.lstrip("/")]}
    assert owners == {STATE_DIR: (64123, 64124), CONFIG: (0, 64124), "/etc/dragonfly": (0, 64124),
                      BINARY: (0, 0), UNIT: (0, 0)}
    assert all(f["owner_applied"] for f in manifest(root)["files"])
    assert not any(c["argv"][0] == "useradd" for c in manifest(root)["commands"])


def test_reinstall_keeps_the_config_and_force_backs_it_up(tmp_path: Path) -> None:
    root, binary = tmp_path / "root", fake_zipapp(tmp_path / "dragonfly")
    port, other_port = free_port(), free_port()
    assert run_install(root, binary, port=port)[0] == 0
    config_file = root / CONFIG.lstrip("/")
    edited = config_file.read_text().replace('log_level = "info"', 'log_level = "debug"')
    assert edited != config_file.read_text()
    config_file.write_text(edited)
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly2", "fake-build-2"),
                            port=other_port)
    assert code == 0, out
    assert config_file.read_text() == edited  # upgrade: the operator's config is kept
    assert "server.port" in out and "--force" in out  # and the ignored flag is reported
    assert (root / BINARY.lstrip("/")).read_bytes() == (tmp_path / "dragonfly2").read_bytes()
    code, out = run_install(root, binary, port=other_port, force=True)
    assert code == 0, out
    backups = list(config_file.parent.glob("dragonfly.toml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == edited
    rewritten = Config.load(config_file, env={})
    assert rewritten["server.port"] == other_port and rewritten["server.log_level"] == "debug"


# --- pre-flight -------------------------------------------------------------------------------

def _preflight(tmp_path: Path, runner: FakeRunner | None = None, **kw: Any
               ) -> tuple[int, str, Path, FakeRunner]:
    root = tmp_path / "root"
    root.mkdir()
    runner = runner or FakeRunner()
    system_kw = {k: kw.pop(k) for k in list(kw) if k in System.__dataclass_fields__}
    system = live_system(root, runner, **system_kw)
    before = tree(root)
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), system,
                            **{"port": free_port(), **kw})
    assert tree(root) == before, "a failed pre-flight must not change anything"
    return code, out, root, runner


@pytest.mark.parametrize("unbuilt", ["distributed"])
def test_a_mode_not_built_yet_installs_with_a_warning(tmp_path: Path, unbuilt: str) -> None:
    root = tmp_path / "root"
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), port=free_port(),
                            mode=unbuilt)
    assert code == 0
    assert f"warning: {unbuilt} mode is not built yet" in out
    assert f'mode = "{unbuilt}"' in (root / "etc/dragonfly/dragonfly.toml").read_text()
    native_out = run_install(tmp_path / "native", fake_zipapp(tmp_path / "d2"),
                             port=free_port(), mode="native")[1]
    assert "not built yet" not in native_out


def test_simple_mode_is_built_and_installs_without_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "root"
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), port=free_port(),
                            mode="simple")
    assert code == 0 and "not built yet" not in out
    assert 'mode = "simple"' in (root / "etc/dragonfly/dragonfly.toml").read_text()


def test_preflight_refuses_without_root(tmp_path: Path) -> None:
    code, out, _, runner = _preflight(tmp_path, euid=lambda: 1000)
    assert code == 2 and "needs root" in out and "sudo dragonfly install" in out
    assert not runner.ran("useradd") and not runner.ran("systemctl enable")


def test_preflight_refuses_an_interpreter_the_build_cannot_use(tmp_path: Path) -> None:
    runner = FakeRunner({f"{tmp_path}/root/usr/bin/python3 -c": CommandResult(0, "3.9\n")})
    code, out, _, _ = _preflight(tmp_path, runner)
    assert code == 2
    assert "Python 3.9" in out and "built for CPython 3.11" in out


def test_preflight_names_who_holds_the_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, out, _, _ = _preflight(tmp_path, port=port)
    assert code == 2
    assert f"TCP port {port} is already in use" in out and f"({os.getpid()})" in out


def test_preflight_rejects_an_unknown_interface(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    for name in ("lo", "eth0"):
        (sysfs / "class/net" / name).mkdir(parents=True)
    code, out, _, _ = _preflight(tmp_path, sysfs=sysfs, interface="nope0")
    assert code == 2 and "no network interface 'nope0'" in out and "eth0" in out


def test_preflight_refuses_full_dhcp_beside_another_server(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    (sysfs / "class/net/eth1").mkdir(parents=True)
    asked: list[str] = []

    def probe(interface: str, timeout: float) -> list[str]:
        asked.append(interface)
        return ["198.51.100.2"]

    code, out, _, _ = _preflight(tmp_path, sysfs=sysfs, dhcp_probe=probe, interface="eth1",
                                 dhcp_mode="full")
    assert asked == ["eth1"]
    assert code == 2 and "198.51.100.2" in out and "--dhcp-mode auto" in out


def test_install_refuses_a_binary_without_the_loaders_and_says_how_to_fix_it(
        tmp_path: Path) -> None:
    """A zipapp built with --no-loaders (or by an old build on a machine without Debian's ipxe)
    installs an appliance that cannot PXE-boot: refused, on a dry run too, changing nothing."""
    root = tmp_path / "root"
    root.mkdir()
    binary = fake_zipapp(tmp_path / "dragonfly", loaders=())
    for dry_run in (True, False):
        code, out = run_install(root, binary, port=free_port(), dry_run=dry_run)
        assert code == 2, out
        assert list(root.iterdir()) == []
        error = next(line for line in out.splitlines() if line.startswith("error:"))
        assert f"{binary} was built without the iPXE boot loaders (undionly.kpxe, ipxe.efi, " \
               "snponly.efi)" in error and "could not PXE-boot" in error
        assert "`python3 build_zipapp.py`" in error and "apt-get download ipxe" in error
        override = root / "var/lib/dragonfly/loaders"
        assert (f"cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi "
                f"/usr/lib/ipxe/snponly.efi {override}/") in error
        assert "snp.efi" not in error  # arm64: no build has it, so no install needs it
    # Half a set is refused too, naming only what is missing.
    code, out = run_install(root, fake_zipapp(tmp_path / "half", loaders=("ipxe.efi",)),
                            port=free_port())
    assert code == 2 and "(undionly.kpxe, snponly.efi)" in out and "Nothing was changed" in out


def test_install_accepts_a_binary_without_loaders_when_the_state_dir_has_them(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    override = root / "var/lib/dragonfly/loaders"
    override.mkdir(parents=True)
    for name in ("undionly.kpxe", "ipxe.efi"):
        (override / name).write_bytes(b"operator's copy")
    half = fake_zipapp(tmp_path / "half", loaders=("snponly.efi",))
    assert run_install(root, fake_zipapp(tmp_path / "none", loaders=()),
                       port=free_port())[0] == 2  # snponly.efi is nowhere
    code, out = run_install(root, half, port=free_port())  # the rest comes from the binary
    assert code == 0, out
    (override / "snponly.efi").write_bytes(b"operator's copy")
    code, out = run_install(root, fake_zipapp(tmp_path / "none", loaders=()))
    assert code == 0, out
    assert "iPXE" not in out


def test_install_follows_the_configured_state_dir_for_loaders(tmp_path: Path) -> None:
    """An upgrade keeps a config whose server.state_dir is elsewhere: that is where the server
    looks for loaders, so that is where install looks."""
    root = tmp_path / "root"
    assert run_install(root, fake_zipapp(tmp_path / "full"), port=free_port())[0] == 0
    config = root / CONFIG.lstrip("/")
    config.write_text(config.read_text().replace('state_dir = "/var/lib/dragonfly"',
                                                 'state_dir = "/srv/dragonfly"'))
    assert Config.load(config, env={})["server.state_dir"] == "/srv/dragonfly"
    bare = fake_zipapp(tmp_path / "bare", loaders=())
    code, out = run_install(root, bare)
    assert code == 2 and f"{root}/srv/dragonfly/loaders/" in out
    (root / "srv/dragonfly/loaders").mkdir(parents=True)
    for name in BUNDLED_LOADERS:
        (root / "srv/dragonfly/loaders" / name).write_bytes(b"x")
    code, out = run_install(root, bare)
    assert code == 0, out


def test_preflight_reports_every_problem_at_once(tmp_path: Path) -> None:
    code, out, _, _ = _preflight(tmp_path, euid=lambda: 1000, has_systemd=lambda: False,
                                 interface="nope0", sysfs=tmp_path)
    assert code == 2
    assert out.count("error:") == 3 and "Nothing was changed" in out


# --- live install and uninstall (systemd, useradd faked) --------------------------------------

def test_live_install_creates_user_enables_starts_and_prints_the_token(tmp_path: Path) -> None:
    # What dragonfly serve prints at each start until setup is done (dragonfly.auth.firstrun).
    banner = ("First-run setup is not complete. Open {url}/setup and enter this one-time setup "
              "token:\n\n    Setup token: {token}\n\n(A new token is issued at every start until "
              "setup is done.)\n")
    journal = (banner.format(url="http://127.0.0.1:1", token="old-token-from-before-upgrade")
               + "Stopping…\n" + banner.format(url="http://127.0.0.1:1", token="tok-3f9a8c7e1b2d"))
    runner = FakeRunner({"journalctl": [CommandResult(0, ""), CommandResult(0, journal)]})
    root = tmp_path / "root"
    waited: list[str] = []
    system = live_system(root, runner, wait_http=lambda url, t, out: waited.append(url) or True)
    port = free_port()
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), system, port=port,
                            interface="lo")
    assert code == 0, out
    commands = runner.commands()
    order = [next(i for i, c in enumerate(commands) if c.startswith(p)) for p in
             ("useradd --system", "systemctl daemon-reload", "systemctl enable dragonfly",
              "systemctl restart dragonfly", "journalctl")]
    assert order == sorted(order), commands
    assert waited == [f"http://127.0.0.1:{port}/api/version"]
    assert f"http://192.0.2.10:{port}/setup" in out
    assert "Setup token: tok-3f9a8c7e1b2d" in out and "old-token" not in out
    assert runner.commands().count(runner.commands()[-1]) == 2  # the journal was asked again
    assert all(c["status"] == "ran" for c in manifest(root)["commands"])


def test_live_upgrade_stops_replaces_and_restarts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    runner = FakeRunner()
    port = free_port()
    assert run_install(root, fake_zipapp(tmp_path / "a", "build-a"), live_system(root, runner),
                       port=port)[0] == 0
    shiv = root / STATE_DIR.lstrip("/") / "shiv"
    (shiv / "dragonfly_build-a").mkdir(parents=True)  # what the first start unpacked
    runner = FakeRunner({"systemctl is-active": CommandResult(0)})
    code, out = run_install(root, fake_zipapp(tmp_path / "b", "build-b"),
                            live_system(root, runner))
    assert code == 0, out
    commands = runner.commands()
    stop = commands.index("systemctl stop dragonfly.service")
    restart = commands.index("systemctl restart dragonfly.service")
    assert stop < restart
    assert not (shiv / "dragonfly_build-a").exists()  # the old build's unpacked copy is gone
    assert (root / BINARY.lstrip("/")).read_bytes() == (tmp_path / "b").read_bytes()


def test_live_uninstall_and_purge_commands(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root, fake_zipapp(tmp_path / "dragonfly"),
                       live_system(root, FakeRunner()), port=free_port())[0] == 0
    runner = FakeRunner()
    system = live_system(root, runner)
    out = io.StringIO()
    assert uninstall(root, purge=False, yes=False, dry_run=False, system=system, out=out) == 0
    assert runner.commands()[0] == "systemctl disable --now dragonfly.service"
    assert runner.ran("systemctl daemon-reload") and not runner.ran("userdel")
    assert not (root / UNIT.lstrip("/")).exists() and not (root / BINARY.lstrip("/")).exists()
    assert (root / CONFIG.lstrip("/")).exists()


def test_uninstall_leaves_only_what_purge_removes(tmp_path: Path) -> None:
    root, binary = tmp_path / "root", fake_zipapp(tmp_path / "dragonfly")
    assert run_install(root, binary, port=free_port(), mode="tinkerbell", interface="lo")[0] == 0
    db = root / STATE_DIR.lstrip("/") / "dragonfly.db"
    seed_v1_database(db, Machine(id="m1", name="m1", state=State.READY, mac="52:54:00:00:00:01"))
    installed = tree(root)
    out = io.StringIO()
    assert uninstall(root, purge=False, yes=False, dry_run=False, system=offline_system(),
                     out=out) == 0, out.getvalue()
    left = tree(root)
    assert left < installed
    # What remains: config and state (and the directories holding them), the k3s/Tinkerbell
    # files (k3s keeps running its cluster) — exactly what --purge removes.
    purge_removes = ("etc/dragonfly", "var/lib/dragonfly", "etc/rancher", "var/lib/rancher",
                     "var/lib/tinkerbell")
    holders = {"etc", "var", "var/lib"}
    assert all(p in holders or p.startswith(purge_removes) for p in left), sorted(left)
    assert "etc/dragonfly/dragonfly.toml" in left and "var/lib/dragonfly/dragonfly.db" in left
    # --purge wants a confirmation: without a terminal and without --yes it refuses.
    out = io.StringIO()
    assert uninstall(root, purge=True, yes=False, dry_run=False, system=offline_system(),
                     out=out) == 2
    assert tree(root) == left and "--yes" in out.getvalue()
    # A "no" on the terminal changes nothing either; the question names what is at stake.
    questions: list[str] = []
    asked = offline_system(interactive=lambda: True,
                           confirm=lambda q: questions.append(q) or False)
    assert uninstall(root, purge=True, yes=False, dry_run=False, system=asked,
                     out=io.StringIO()) == 1
    assert tree(root) == left and "1 machines" in questions[0]
    out = io.StringIO()
    assert uninstall(root, purge=True, yes=True, dry_run=False, system=offline_system(),
                     out=out) == 0, out.getvalue()
    assert list(root.iterdir()) == []


def test_uninstall_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root, fake_zipapp(tmp_path / "dragonfly"), port=free_port())[0] == 0
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if not p.is_symlink()}
    out = io.StringIO()
    assert uninstall(root, purge=True, yes=True, dry_run=True, system=offline_system(),
                     out=out) == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if not p.is_symlink()} == before
    assert "remove /var/lib/dragonfly and everything in it" in out.getvalue()


# --- the installed zipapp, for real -----------------------------------------------------------

def _serve(binary: Path, root: Path, env: dict[str, str], log: Path
           ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(root / CONFIG.lstrip("/")),
             "--state-dir", str(root / STATE_DIR.lstrip("/")), "--bind", "127.0.0.1",
             "--port", str(port), "--dhcp-mode", "off"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=root)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _version(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url + "/api/version", timeout=5) as response:
        assert response.status == 200
        return str(json.loads(response.read())["version"])


def rebuilt(zipapp: Path, dest: Path, version: str) -> Path:
    """The zipapp as a later build would be: another version and another shiv build id."""
    data = zipapp.read_bytes()
    shebang = data[:data.index(b"\n") + 1]
    buf = io.BytesIO()
    with zipfile.ZipFile(zipapp) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename.startswith("site-packages/dragonfly/__pycache__/__init__."):
                continue  # the build's unchecked .pyc would keep the old version
            body = src.read(info)
            if info.filename == "environment.json":
                env = json.loads(body)
                env["build_id"] = hashlib.sha256(f"{env['build_id']}+{version}".encode()
                                                 ).hexdigest()
                body = json.dumps(env).encode()
            elif info.filename == "site-packages/dragonfly/__init__.py":
                body = re.sub(rb'__version__ = "[^"]*"', f'__version__ = "{version}"'.encode(),
                              body)
            dst.writestr(info, body)
    dest.write_bytes(shebang + buf.getvalue())
    dest.chmod(0o755)
    return dest


def _env(shiv_root: Path, tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "SHIV_ROOT": str(shiv_root), "LANG": "C.UTF-8",
            "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}


@pytest.mark.zipapp
def test_installed_binary_serves_from_the_installed_config(zipapp: Path, shiv_root: Path,
                                                          tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = _env(shiv_root, tmp_path)
    done = subprocess.run([str(zipapp), "install", "--root", str(root), "--dhcp-mode", "off",
                           "--port", str(free_port())], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    proc, url = _serve(root / BINARY.lstrip("/"), root, env, tmp_path / "serve.log")
    try:
        wait_http(url + "/api/version", 60, proc)
        assert _version(url) == __version__
    finally:
        _stop(proc)
    assert (root / STATE_DIR.lstrip("/") / "dragonfly.db").exists()


@pytest.mark.zipapp
def test_upgrade_keeps_the_database_and_migrates_it(zipapp: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    # As the unit does: the zipapp unpacks under the state directory.
    env = _env(root / STATE_DIR.lstrip("/") / "shiv", tmp_path)
    install_cmd = ["install", "--root", str(root), "--dhcp-mode", "off", "--no-start"]
    done = subprocess.run([str(zipapp), *install_cmd], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    machine = Machine(id="m-kept", name="kept-across-upgrade", state=State.INSTALLED,
                      mac="52:54:00:aa:bb:cc", tags=["rack-7"])
    db_path = root / STATE_DIR.lstrip("/") / "dragonfly.db"
    seed_v1_database(db_path, machine)
    config_before = (root / CONFIG.lstrip("/")).read_bytes()
    proc, url = _serve(root / BINARY.lstrip("/"), root, env, tmp_path / "old.log")
    try:
        wait_http(url + "/api/version", 60, proc)
        assert _version(url) == __version__
    finally:
        _stop(proc)
    old_caches = {p.name for p in (root / STATE_DIR.lstrip("/") / "shiv").iterdir()}

    newer = rebuilt(zipapp, tmp_path / "dragonfly-new", f"{__version__}+upgrade")
    done = subprocess.run([str(newer), *install_cmd], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Upgrading" in done.stdout
    assert (root / BINARY.lstrip("/")).read_bytes() == newer.read_bytes()
    assert (root / CONFIG.lstrip("/")).read_bytes() == config_before
    assert not old_caches & {p.name for p in (root / STATE_DIR.lstrip("/") / "shiv").iterdir()}
    assert manifest(root)["version"] == f"{__version__}+upgrade"
    proc, url = _serve(root / BINARY.lstrip("/"), root, env, tmp_path / "new.log")
    try:
        wait_http(url + "/api/version", 60, proc)
        assert _version(url) == f"{__version__}+upgrade"
    finally:
        _stop(proc)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        row = db.execute("SELECT data FROM docs WHERE kind = 'machine' AND key = 'm-kept'"
                         ).fetchone()
    finally:
        db.close()
    assert version == LATEST > 1  # the new binary migrated the old database
    assert Machine.from_dict(json.loads(row[0])) == machine


@pytest.mark.lab
@pytest.mark.zipapp
def test_service_runs_as_its_user_with_only_three_capabilities(zipapp: Path,
                                                               tmp_path: Path) -> None:
    """The unit's identity and privileges, applied without systemd (not PID 1 here): setpriv
    gives the dragonfly uid/gid, the three ambient capabilities and no-new-privs; prctl
    PR_SET_MDWE is what systemd uses for MemoryDenyWriteExecute."""
    require_lab("setpriv")
    python3 = shutil.which("python3", path=SYSTEMD_PATH)
    assert python3, "the service needs python3 on systemd's PATH"
    # Somewhere the service user can reach (pytest's tmp_path is under a 0700 directory).
    root = Path(tempfile.mkdtemp(prefix="dragonfly-sandbox-", dir="/tmp"))
    try:
        root.chmod(0o755)
        _run_sandboxed(zipapp, root, python3, tmp_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_sandboxed(zipapp: Path, root: Path, python3: str, tmp_path: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("dragonfly:x:64123:64124::/var/lib/dragonfly:/bin/false\n")
    (root / "etc/group").write_text("dragonfly:x:64124:\n")
    done = subprocess.run([str(zipapp), "install", "--root", str(root), "--dhcp-mode", "off",
                           "--no-start"], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path / "installer-shiv", tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    state = root / STATE_DIR.lstrip("/")
    port = free_port()
    caps = "+net_bind_service,+net_raw,+net_broadcast"
    mdwe = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
            "assert libc.prctl(65, 1, 0, 0, 0) == 0, 'PR_SET_MDWE'; "
            "os.umask(0o077); os.execv(sys.argv[1], sys.argv[1:])")
    env = {"PATH": SYSTEMD_PATH, "SHIV_ROOT": str(state / "shiv"), "LANG": "C.UTF-8"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            ["setpriv", "--reuid=64123", "--regid=64124", "--clear-groups",
             f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
             f"--bounding-set=-all,{caps}", "--no-new-privs",
             python3, "-c", mdwe, str(root / BINARY.lstrip("/")), "serve",
             "--config", str(root / CONFIG.lstrip("/")), "--state-dir", str(state),
             "--bind", "127.0.0.1", "--port", str(port)],
            env=env, stdout=fh, stderr=subprocess.STDOUT, cwd="/")
    try:
        wait_http(f"http://127.0.0.1:{port}/api/version", 90, proc)
        assert _version(f"http://127.0.0.1:{port}") == __version__
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] == "64123" and fields["NoNewPrivs"].strip() == "1"
        wanted = (1 << 10) | (1 << 11) | (1 << 13)  # NET_BIND_SERVICE, NET_BROADCAST, NET_RAW
        assert int(fields["CapEff"], 16) == wanted and int(fields["CapBnd"], 16) == wanted
    finally:
        _stop(proc)
    db = state / "dragonfly.db"
    assert db.stat().st_uid == 64123 and mode(db) == 0o600, log.read_text()


# --- DHCP probe -------------------------------------------------------------------------------

@pytest.fixture
def dhcp_lab(tmp_path: Path) -> Iterator[Callable[[float], list[str]]]:
    """Two namespaces on a veth pair; ``probe(timeout)`` runs the real probe on one side."""
    require_lab("ip", "dnsmasq")
    tag = uuid.uuid4().hex[:6]
    ours, site = f"dfi-{tag}", f"dfs-{tag}"
    ip = ["ip"]

    def sh(*args: str) -> None:
        subprocess.run([*ip, *args], check=True, capture_output=True, timeout=20)

    try:
        sh("netns", "add", ours)
        sh("netns", "add", site)
        sh("link", "add", "vi" + tag, "type", "veth", "peer", "name", "vs" + tag)
        sh("link", "set", "vi" + tag, "netns", ours)
        sh("link", "set", "vs" + tag, "netns", site)
        sh("-n", ours, "addr", "add", "10.98.7.1/24", "dev", "vi" + tag)
        sh("-n", site, "addr", "add", "10.98.7.2/24", "dev", "vs" + tag)
        for ns, dev in ((ours, "vi" + tag), (site, "vs" + tag)):
            sh("-n", ns, "link", "set", "lo", "up")
            sh("-n", ns, "link", "set", dev, "up")

        def probe(timeout: float) -> list[str]:
            code = ("import json, sys; from dragonfly.ops.checks import "
                    f"probe_dhcp_servers; print(json.dumps(probe_dhcp_servers('vi{tag}', "
                    f"{timeout})))")
            done = subprocess.run(["ip", "netns", "exec", ours, sys.executable, "-c", code],
                                  capture_output=True, text=True, timeout=timeout + 30,
                                  cwd=ROOT)
            assert done.returncode == 0, done.stderr
            found: list[str] = json.loads(done.stdout)
            return found

        probe.site = site  # type: ignore[attr-defined]
        probe.dev = "vs" + tag  # type: ignore[attr-defined]
        yield probe
    finally:
        for ns in (ours, site):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@pytest.mark.lab
def test_probe_finds_a_real_dhcp_server_and_nothing_where_there_is_none(
        dhcp_lab: Any, tmp_path: Path) -> None:
    assert dhcp_lab(1.0) == []
    dnsmasq = subprocess.Popen(
        ["ip", "netns", "exec", dhcp_lab.site, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
         "--port=0", f"--interface={dhcp_lab.dev}", "--bind-interfaces",
         "--dhcp-range=10.98.7.100,10.98.7.150,255.255.255.0,1h",
         f"--dhcp-leasefile={tmp_path / 'leases'}", "--user=root", "--log-dhcp"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        found: list[str] = []
        for _ in range(3):  # dnsmasq needs a moment to bind
            found = dhcp_lab(2.0)
            if found:
                break
        assert found == ["10.98.7.2"]
    finally:
        dnsmasq.terminate()
        log = dnsmasq.communicate(timeout=10)[0].decode(errors="replace")
    assert "DHCPDISCOVER" in log and "DHCPOFFER" in log
    leases = tmp_path / "leases"
    assert not leases.exists() or leases.read_text() == "", "a probe must not take a lease"


# --- Tinkerbell mode --------------------------------------------------------------------------

HELMCHART_SPEC_FIELDS = {  # the HelmChart CRD's spec, as documented by k3s
    "chart", "chartContent", "targetNamespace", "createNamespace", "version", "repo", "repoCA",
    "repoCAConfigMap", "helmVersion", "bootstrap", "set", "jobImage", "backOffLimit", "timeout",
    "failurePolicy", "authSecret", "authPassCredentials", "dockerRegistrySecret",
    "podSecurityContext", "securityContext", "valuesContent", "valuesSecrets",
    "insecureSkipTLSVerify", "plainHTTP"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_tinkerbell_files_parse_and_have_what_k3s_needs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    system = offline_system(ipv4_of=lambda name: "10.20.30.40")
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"), system,
                            mode="tinkerbell", interface="lo", dhcp_mode="full",
                            port=free_port())
    assert code == 0, out
    k3s = yaml.safe_load((root / K3S_CONFIG.lstrip("/")).read_text())
    assert k3s["node-ip"] == "10.20.30.40" and k3s["flannel-iface"] == "lo"
    assert "traefik" in k3s["disable"] and "servicelb" not in k3s["disable"]
    assert mode(root / K3S_CONFIG.lstrip("/")) == 0o600
    docs = _docs(root / HELMCHART.lstrip("/"))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Namespace", "HelmChart", "ServiceAccount", "Role", "RoleBinding", "Secret"]
    chart = docs[1]
    assert chart["apiVersion"] == "helm.cattle.io/v1"
    assert chart["metadata"] == {"name": "tinkerbell", "namespace": "kube-system"}
    spec = chart["spec"]
    assert set(spec) <= HELMCHART_SPEC_FIELDS, set(spec) - HELMCHART_SPEC_FIELDS
    assert spec["chart"] == CHART == "oci://ghcr.io/tinkerbell/charts/tinkerbell"
    assert "repo" not in spec  # an OCI chart is named in full by spec.chart
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", spec["version"])
    assert spec["targetNamespace"] == "tink-system" and spec["createNamespace"] is True
    values = yaml.safe_load(spec["valuesContent"])
    assert values["publicIP"] == "10.20.30.40"
    assert values["artifactsFileServer"] == "http://10.20.30.40:7173"
    assert values["trustedProxies"] == [k3s["cluster-cidr"]]
    assert values["deployment"]["init"]["sourceInterface"] == "lo"
    assert values["deployment"]["envs"]["smee"] == {"dhcpEnabled": True,
                                                    "dhcpMode": "reservation"}
    assert values["optional"]["kubevip"]["enabled"] is False and values["service"]["lbClass"] == ""
    secret = docs[5]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": docs[2]["metadata"]["name"]}
    assert {d["metadata"].get("namespace") for d in docs[2:]} == {"tink-system"}
    # Dragonfly: Tinkerbell's smee answers DHCP, so Dragonfly's own DHCP is off.
    config = Config.load(root / CONFIG.lstrip("/"), env={})
    assert (config["server.mode"], config["boot.dhcp_mode"], config["tinkerbell.namespace"],
            config["tinkerbell.kubeconfig"]) == ("tinkerbell", "off", "tink-system", KUBECONFIG)
    assert "get.k3s.io" in json.dumps(manifest(root)["notes"])  # recorded, not run


def test_tinkerbell_reinstall_keeps_its_choices_and_can_move_to_a_vip(tmp_path: Path) -> None:
    root, binary = tmp_path / "root", fake_zipapp(tmp_path / "dragonfly")
    system = offline_system(ipv4_of=lambda name: "10.20.30.40")
    assert run_install(root, binary, system, mode="tinkerbell", interface="lo",
                       dhcp_mode="selective", port=free_port())[0] == 0
    assert run_install(root, binary, system)[0] == 0  # an upgrade with no options

    def values() -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(
            _docs(root / HELMCHART.lstrip("/"))[1]["spec"]["valuesContent"])
        return loaded

    assert values()["deployment"]["envs"]["smee"]["dhcpMode"] == "proxy"
    assert run_install(root, binary, system, tinkerbell_ip="10.20.30.99")[0] == 0
    assert values()["publicIP"] == "10.20.30.99" and values()["optional"]["kubevip"]["enabled"]
    k3s = yaml.safe_load((root / K3S_CONFIG.lstrip("/")).read_text())
    assert k3s["node-ip"] == "10.20.30.40" and "servicelb" in k3s["disable"]
    assert values()["deployment"]["envs"]["smee"]["dhcpMode"] == "proxy"


def test_tinkerbell_files_survive_hostile_values() -> None:
    s = TinkerbellSettings(interface='eth0: {"x": [1]} # not a comment', node_ip="10.0.0.1",
                           public_ip="10.0.0.9", vip=True, namespace="tink-system",
                           chart_version='v1"\n  evil: true', dhcp_mode="off")
    k3s = yaml.safe_load(render_k3s_config(s))
    assert k3s["flannel-iface"] == s.interface and k3s["disable"] == ["traefik", "servicelb"]
    chart = _docs_from(render_helmchart(s))[1]
    assert chart["spec"]["version"] == s.chart_version and "evil" not in chart["spec"]
    values = yaml.safe_load(chart["spec"]["valuesContent"])
    assert values["optional"]["kubevip"] == {"enabled": True, "interface": s.interface}
    assert values["service"]["lbClass"] == "kube-vip.io/kube-vip-class"
    assert values["deployment"]["envs"]["smee"]["dhcpEnabled"] is False


def _docs_from(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_tinkerbell_without_internet_says_how_to_continue(tmp_path: Path) -> None:
    runner = FakeRunner({"curl": CommandResult(6, "", "curl: (6) Could not resolve host: "
                                                      "get.k3s.io\n")})
    root = tmp_path / "root"
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"),
                            live_system(root, runner), mode="tinkerbell", interface="lo",
                            port=free_port())
    assert code == 3
    assert "Could not resolve host" in out and "airgap" in out
    assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in out
    assert "sudo dragonfly install --mode tinkerbell` again" in out
    assert not runner.ran("sh ")  # nothing was piped into a shell
    assert (root / K3S_CONFIG.lstrip("/")).exists() and (root / HELMCHART.lstrip("/")).exists()
    assert runner.ran("systemctl restart dragonfly")  # Dragonfly itself is up
    assert manifest(root)["mode"] == "tinkerbell"  # recorded even though it stopped


def test_tinkerbell_waits_with_progress_then_writes_the_kubeconfig(tmp_path: Path) -> None:
    token = "eyJhbGciOi.dragonfly-token"
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n").decode()
    k = "/usr/local/bin/k3s kubectl "
    not_yet = CommandResult(1, "", "The connection to the server was refused")
    runner = FakeRunner({
        "curl": CommandResult(0), "sh ": CommandResult(0, "[INFO] systemd: Starting k3s\n"),
        k + "get --raw=/readyz": [not_yet] * 12 + [CommandResult(0, "ok")],
        k + "-n kube-system get job helm-install-tinkerbell": [CommandResult(0, "")] * 3
        + [CommandResult(0, "1")],
        k + "-n tink-system get deployment tinkerbell": [CommandResult(0, "0")] * 2
        + [CommandResult(0, "1")],
        k + "-n tink-system get secret dragonfly-token -o jsonpath={.data.token}":
            CommandResult(0, base64.b64encode(token.encode()).decode()),
        k + "-n tink-system get secret dragonfly-token -o jsonpath={.data.ca\\.crt}":
            CommandResult(0, ca),
    })
    root = tmp_path / "root"
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"),
                            live_system(root, runner), mode="tinkerbell", interface="lo",
                            port=free_port())
    assert code == 0, out
    assert "still waiting for the k3s API server" in out
    for step in ("the k3s API server", "the Tinkerbell chart to install", "Tinkerbell to run",
                 "Dragonfly's access token"):
        assert f"✓ {step}" in out, step
    kubeconfig = root / KUBECONFIG.lstrip("/")
    assert mode(kubeconfig) == 0o640
    doc = yaml.safe_load(kubeconfig.read_text())
    assert doc["users"][0]["user"]["token"] == token
    assert doc["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:6443",
                                             "certificate-authority-data": ca}
    assert doc["contexts"][0]["context"]["namespace"] == "tink-system"
    commands = runner.commands()
    assert commands.index("systemctl try-restart dragonfly.service") > max(
        i for i, c in enumerate(commands) if "dragonfly-token" in c)
    assert manifest(root)["k3s_installed_by_dragonfly"] is True


def test_tinkerbell_uses_an_existing_k3s_and_gives_up_clearly(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/k3s").write_text("")
    runner = FakeRunner({"/usr/local/bin/k3s kubectl get --raw=/readyz": CommandResult(1)})
    code, out = run_install(root, fake_zipapp(tmp_path / "dragonfly"),
                            live_system(root, runner), mode="tinkerbell", interface="lo",
                            port=free_port())
    assert code == 3
    assert not runner.ran("curl") and runner.ran("systemctl enable --now k3s.service")
    assert "gave up waiting for the k3s API server" in out and "journalctl -u k3s" in out
