"""``dragonfly install`` and ``dragonfly uninstall``: a bare server becomes an appliance and back.

Install copies the running zipapp to /usr/local/bin, writes the config (every setting,
commented), creates the ``dragonfly`` system user and /var/lib/dragonfly, installs the hardened
unit shipped inside the package (``dragonfly/data/dragonfly.service``), starts it and waits for
the panel. Re-running it upgrades the binary and keeps config and database (the server migrates
the database when it starts); ``--force`` rewrites the config after backing it up. Tinkerbell
mode adds k3s and the Tinkerbell chart (``install_tinkerbell``).

Everything is planned first (``install_plan``), so ``--dry-run`` prints exactly what would be
done, and everything happens under ``--root`` so tests and image builders install into a
directory. What was done is recorded in /etc/dragonfly/install.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TextIO

from dragonfly import __version__
from dragonfly.config import DHCP_MODES, MODES, UNBUILT_MODES, Config, render_toml
from dragonfly.edge.dhcp.netif import default_route_interface
from dragonfly.errors import DragonflyError
from dragonfly.ops.checks import (
    DhcpProbe,
    Problem,
    binary_problem,
    dhcp_problem,
    interface_ipv4,
    interface_problem,
    loaders_problem,
    port_problem,
    probe_dhcp_servers,
    service_python_problem,
)
from dragonfly.ops.plan import (
    MANIFEST,
    ROOT_OWNER,
    Accounts,
    Context,
    CopyFile,
    Do,
    InstallError,
    MakeDir,
    Owner,
    Plan,
    Remove,
    Run,
    Runner,
    WriteFile,
    read_manifest,
    run_command,
    write_manifest,
)
from dragonfly.ops.tinkerbell import (
    DEFAULT_CHART_VERSION,
    HELMCHART,
    HOOKOS_DIR,
    K3S_BIN,
    K3S_CONFIG,
    TinkerbellSettings,
    add_tinkerbell_steps,
)
from dragonfly.store import db_path

USER = "dragonfly"
SERVICE = "dragonfly.service"
BINARY = "/usr/local/bin/dragonfly"
CONFIG_DIR = "/etc/dragonfly"
CONFIG = f"{CONFIG_DIR}/dragonfly.toml"
STATE_DIR = "/var/lib/dragonfly"
SHIV_DIR = f"{STATE_DIR}/shiv"
UNIT = f"/etc/systemd/system/{SERVICE}"
WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{SERVICE}"
CONFIG_OWNER = Owner("root", USER)  # root writes it, the service only reads it
STATE_OWNER = Owner(USER, USER)
PANEL_TIMEOUT = 90.0  # the first start unpacks the zipapp into /var/lib/dragonfly/shiv

# (tool, Debian package) the image store runs: qcow2 images are converted with qemu-img.
IMAGE_TOOLS = (("qemu-img", "qemu-utils"), ("zstd", "zstd"))
USERADD = ["useradd", "--system", "--user-group", "--home-dir", STATE_DIR, "--no-create-home",
           "--shell", "/usr/sbin/nologin", "--comment", "Dragonfly provisioning", USER]


def unit_text() -> str:
    """The unit file shipped in the package (the repository's dragonfly.service)."""
    return files("dragonfly").joinpath("data", "dragonfly.service").read_text()


def running_zipapp() -> Path | None:
    """The zipapp this process was started from (shiv runs it as sys.argv[0]), if any."""
    candidate = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if candidate is None or not candidate.is_file() or not zipfile.is_zipfile(candidate):
        return None
    return candidate.resolve()


def _ask(question: str) -> bool:
    """Yes/no on the terminal; anything but yes is no."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _interactive() -> bool:
    return sys.stdin.isatty()


def wait_http(url: str, timeout: float, out: TextIO | None = None) -> bool:
    """Poll ``url`` until it answers 200; a dot every few seconds so the wait is visible."""
    deadline = time.monotonic() + timeout
    next_dot = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if out is not None and time.monotonic() >= next_dot:
            out.write(".")
            out.flush()
            next_dot += 3
        time.sleep(0.5)
    return False


@dataclass
class System:
    """Everything install learns from or does to the machine itself, replaceable in tests."""

    live: bool
    runner: Runner = run_command
    euid: Callable[[], int] = os.geteuid
    sysfs: Path = Path("/sys")
    proc: Path = Path("/proc")
    dhcp_probe: DhcpProbe = probe_dhcp_servers
    ipv4_of: Callable[[str], str | None] = interface_ipv4
    wait_http: Callable[[str, float, TextIO | None], bool] = wait_http
    has_systemd: Callable[[], bool] = lambda: Path("/run/systemd/system").is_dir()
    interactive: Callable[[], bool] = _interactive
    confirm: Callable[[str], bool] = _ask
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def for_root(cls, root: Path) -> System:
        return cls(live=root.resolve() == Path("/"))


@dataclass
class InstallOptions:
    mode: str | None = None
    interface: str | None = None
    port: int | None = None
    dhcp_mode: str | None = None
    root: Path = Path("/")
    no_start: bool = False
    dry_run: bool = False
    yes: bool = False
    force: bool = False
    binary: Path | None = None
    tinkerbell_version: str = DEFAULT_CHART_VERSION
    tinkerbell_ip: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)  # what the command line set

    def __post_init__(self) -> None:
        self.flags = {k: v for k, v in (("server.mode", self.mode), ("server.port", self.port),
                                        ("boot.interface", self.interface),
                                        ("boot.dhcp_mode", self.dhcp_mode)) if v is not None}


# --- install ----------------------------------------------------------------------------------

@dataclass
class _Install:
    """One install run: decisions made up front, then a plan."""

    opts: InstallOptions
    system: System
    out: TextIO
    problems: list[Problem] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    write_config: bool = True
    backup: str = ""
    upgrading: bool = False
    was_active: bool = False
    tinkerbell: TinkerbellSettings | None = None

    def path(self, target: str) -> Path:
        return self.opts.root / target.lstrip("/")

    def fatal(self, message: str) -> None:
        self.problems.append(Problem(message))

    def warn(self, message: str) -> None:
        self.problems.append(Problem(message, fatal=False))

    def decide_config(self) -> None:
        """Keep the existing config (upgrade), or compose the one to write."""
        opts, existing = self.opts, self.path(CONFIG)
        old: dict[str, Any] = {}
        if existing.exists():
            try:
                old = Config.load(existing, env={}).as_dict()
            except DragonflyError as exc:
                if not opts.force:
                    self.fatal(f"the existing {CONFIG} is invalid ({exc.message}); fix it, or "
                               "re-run with --force to rewrite it (the old file is kept as a "
                               "backup)")
        if existing.exists() and not opts.force:
            self.write_config = False
            self.values = old or Config.defaults().as_dict()
            # In Tinkerbell mode --dhcp-mode is smee's, not the config's: it is applied.
            tinkerbell = self.values.get("server.mode") == "tinkerbell"
            ignored = [k for k, v in opts.flags.items() if self.values.get(k) != v
                       and not (tinkerbell and k == "boot.dhcp_mode")]
            if ignored:
                self.warn(f"keeping {CONFIG}: the settings {', '.join(ignored)} from the command "
                          "line are not applied to it; edit the file, or re-run with --force to "
                          "rewrite it from these options (the old file is backed up)")
            return
        self.values = {**Config.defaults().as_dict(), **old, **opts.flags}
        if existing.exists():
            self.backup = f"{CONFIG}.{time.strftime('%Y%m%d-%H%M%S')}.bak"

    def decide_tinkerbell(self) -> None:
        if self.values["server.mode"] != "tinkerbell":
            return
        opts = self.opts
        interface = self.values["boot.interface"] or default_route_interface(self.system.proc)
        if not interface:
            self.fatal("Tinkerbell mode needs the interface facing the machines: pass --interface")
            return
        node_ip = self.system.ipv4_of(interface)
        if node_ip is None:
            self.fatal(f"interface {interface} has no IPv4 address; Tinkerbell (k3s node IP and "
                       "the boot services) needs one")
            return
        # Tinkerbell's smee answers DHCP and TFTP: Dragonfly's own boot services stay off and
        # the DHCP mode asked for goes to smee. An upgrade keeps what the last install chose.
        previous = read_manifest(opts.root).get("tinkerbell") or {}
        smee_mode = opts.dhcp_mode or previous.get("dhcp_mode") or "auto"
        vip = opts.tinkerbell_ip or (previous.get("public_ip") if previous.get("vip") else None)
        self.values["boot.interface"] = interface
        self.values["boot.dhcp_mode"] = "off"
        self.tinkerbell = TinkerbellSettings(
            interface=interface, node_ip=node_ip, public_ip=vip or node_ip, vip=vip is not None,
            namespace=self.values["tinkerbell.namespace"],
            chart_version=opts.tinkerbell_version, dhcp_mode=smee_mode)

    def check(self) -> None:
        from dragonfly._entry import interpreter_problem

        opts, system, live = self.opts, self.system, self.system.live
        if problem := interpreter_problem():
            self.fatal(problem)
        if problem := binary_problem(opts.binary):
            self.fatal(problem)
        elif opts.binary is not None and (problem := loaders_problem(
                opts.binary, self.path(self.values["server.state_dir"]) / "loaders")):
            # Wherever it installs, a binary that cannot PXE-boot is no appliance.
            self.fatal(problem)
        if live and system.euid() != 0:
            message = "install needs root: run `sudo dragonfly install`"
            (self.warn if opts.dry_run else self.fatal)(message)
        if live and not opts.no_start and not system.has_systemd():
            self.fatal("systemd is not running on this machine, so the service cannot be "
                       "started: re-run with --no-start and start `dragonfly serve` yourself")
        if live and opts.binary is not None and binary_problem(opts.binary) is None and (
                problem := service_python_problem(opts.binary, opts.root, system.runner)):
            self.fatal(problem)
        if self.values["server.mode"] in UNBUILT_MODES:
            self.warn(f"{self.values['server.mode']} mode is not built yet: the setting is "
                      "written, and until an upgrade brings that mode the appliance provisions "
                      "as in native mode (Dragonfly's discovery agent)")
        # Network checks look at this machine: under --root (another system) they only warn.
        report = self.fatal if live else self.warn
        interface = self.values["boot.interface"]
        if interface and (problem := interface_problem(interface, system.sysfs)):
            report(problem)
        if not (self.upgrading and self.was_active) and (
                problem := port_problem(self.values["server.bind"], self.values["server.port"],
                                        system.proc)):
            report(problem)
        wants_full = (self.tinkerbell.dhcp_mode if self.tinkerbell
                      else self.values["boot.dhcp_mode"]) == "full"
        if wants_full and live and not opts.dry_run:
            probe_on = interface or default_route_interface(system.proc)
            if not probe_on:
                self.fatal("--dhcp-mode full needs the interface facing the machines: pass "
                           "--interface")
            elif problem_or_none := dhcp_problem(probe_on, system.dhcp_probe):
                self.problems.append(problem_or_none)
        elif wants_full and opts.dry_run:
            self.warn("a real install first checks the network for other DHCP servers "
                      "(--dhcp-mode full); a dry run sends nothing")
        elif wants_full:
            self.warn("not checking for other DHCP servers: --root is not this machine")

    def plan(self) -> Plan:
        opts, live = self.opts, self.system.live
        plan = Plan()
        if not Accounts(opts.root, live).exists(USER):
            plan.add(Run(USERADD, "the system user the service runs as"))
        plan.add(MakeDir(CONFIG_DIR, 0o750, CONFIG_OWNER))
        if self.backup:
            plan.add(CopyFile(self.path(CONFIG), self.backup, 0o640, CONFIG_OWNER,
                              "backup of the config --force replaces"))
        if self.write_config:
            plan.add(WriteFile(CONFIG, render_toml(self.values).encode(), 0o640, CONFIG_OWNER,
                               "every setting, with its help"))
        plan.add(MakeDir(STATE_DIR, 0o750, STATE_OWNER))
        missing = [pkg for tool, pkg in IMAGE_TOOLS
                   if not (live and shutil.which(tool))]
        if missing:
            # Not fatal: the panel works without them, and a qcow2 template then says what
            # to install when it is deployed.
            plan.add(Run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                         "the image store converts qcow2 with qemu-img; the agent's zstd "
                         "images need zstd", check=False, timeout=600))
        if self.was_active:
            plan.add(Run(["systemctl", "stop", SERVICE], "the upgrade replaces its binary"))
        assert opts.binary is not None
        plan.add(CopyFile(opts.binary, BINARY, 0o755, ROOT_OWNER,
                          "upgrade" if self.upgrading else "the zipapp"))
        if self.upgrading:
            plan.add(Do(f"remove unpacked copies of older builds from {SHIV_DIR}",
                        lambda ctx: prune_shiv_cache(ctx, opts.binary)))
        plan.add(WriteFile(UNIT, unit_text().encode(), 0o644, ROOT_OWNER, "hardened unit"))
        if live:
            plan.add(Run(["systemctl", "daemon-reload"]))
            plan.add(Run(["systemctl", "enable", SERVICE], "start at boot"))
        else:
            # Confined to the root directory: enabling there creates the wants/ symlink.
            plan.add(Run(["systemctl", f"--root={opts.root}", "enable", SERVICE],
                         "start at boot (symlink under --root)", live=False, check=False))
        if not opts.no_start:
            plan.add(Run(["systemctl", "restart", SERVICE], "start (or restart after upgrade)",
                         hint="See why with `journalctl -u dragonfly -n 50`, fix it and run the "
                              "install again."))
            plan.add(Do(f"wait until the panel answers on {self.local_url()}api/version",
                        self.wait_panel, live=True))
        if self.tinkerbell is not None:
            add_tinkerbell_steps(plan, self.tinkerbell, CONFIG_OWNER)
            if not opts.no_start:
                plan.add(Run(["systemctl", "try-restart", SERVICE],
                             "pick up the new kubeconfig"))
        return plan

    def local_url(self) -> str:
        bind = self.values["server.bind"]
        host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.values['server.port']}/"

    def public_url(self) -> str:
        if self.values["server.public_url"]:
            return str(self.values["server.public_url"])
        interface = self.values["boot.interface"] or default_route_interface(self.system.proc)
        address = self.system.ipv4_of(interface) if interface else None
        if address is None or self.values["server.bind"] not in ("0.0.0.0", "::"):
            return self.local_url()
        return f"http://{address}:{self.values['server.port']}/"

    def wait_panel(self, ctx: Context) -> None:
        url = self.local_url() + "api/version"
        if not self.system.wait_http(url, PANEL_TIMEOUT, ctx.out):
            raise InstallError(f"the service started but {url} did not answer within "
                               f"{PANEL_TIMEOUT:.0f} s: see `journalctl -u dragonfly`")
        ctx.say("")


def prune_shiv_cache(ctx: Context, binary: Path | None) -> None:
    """Drop unpacked copies of other builds; the new build unpacks itself at first start."""
    cache = ctx.path(SHIV_DIR)
    if binary is None or not cache.is_dir():
        return
    try:
        with zipfile.ZipFile(binary) as zf:
            build_id = str(json.loads(zf.read("environment.json"))["build_id"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return
    for entry in cache.iterdir():
        if build_id not in entry.name:
            Remove(str(Path(SHIV_DIR) / entry.name), recursive=True).apply(ctx)


SETUP_TOKEN = re.compile(r"setup[ _-]token\W+([A-Za-z0-9_\-.~+/=]{8,})", re.IGNORECASE)


def find_setup_token(runner: Runner, sleep: Callable[[float], None], tries: int = 5
                     ) -> str | None:
    """The first-run token the service printed at its last start (``Setup token: ...``, see
    dragonfly.auth.firstrun), read back from the journal; None once setup is done."""
    for attempt in range(tries):
        result = runner(["journalctl", "-u", SERVICE, "-o", "cat", "--no-pager", "-n", "300"],
                        timeout=15)
        found = SETUP_TOKEN.findall(result.stdout) if result.ok else []
        if found:
            return str(found[-1])  # a new token is issued at every start: the last one counts
        if attempt < tries - 1:
            sleep(1.0)  # the journal may not have the service's output yet
    return None


def install(opts: InstallOptions, system: System, out: TextIO) -> int:
    job = _Install(opts, system, out)
    opts.binary = opts.binary or running_zipapp()
    if opts.binary is not None:
        opts.binary = opts.binary.resolve()
    job.upgrading = job.path(CONFIG).exists() or job.path(BINARY).exists()
    if system.live and job.upgrading:
        job.was_active = system.runner(["systemctl", "is-active", "--quiet", SERVICE],
                                       timeout=10).ok
    job.decide_config()
    job.decide_tinkerbell()
    job.check()
    for problem in job.problems:
        out.write(f"{'error' if problem.fatal else 'warning'}: {problem.message}\n")
    fatal = any(p.fatal for p in job.problems)
    what = "upgrade" if job.upgrading else "install"
    where = "" if system.live else f" under {opts.root}"
    if opts.dry_run:
        out.write(f"Dry run: nothing is changed. `dragonfly install` would {what} Dragonfly "
                  f"{__version__} ({job.values['server.mode']} mode){where}:\n")
        if opts.binary is not None:
            job.plan().print(out, system.live)
        out.write(f"  and record what it did in {MANIFEST}.\n")
        return 2 if fatal else 0
    if fatal:
        out.write("Nothing was changed.\n")
        return 2
    plan = job.plan()
    if not opts.yes and system.interactive():
        out.write(f"Dragonfly {__version__} will {what} itself{where}:\n")
        plan.print(out, system.live)
        if not system.confirm("Proceed?"):
            out.write("Nothing was changed.\n")
            return 1
    return _apply_install(job, plan)


def _apply_install(job: _Install, plan: Plan) -> int:
    opts, system, out = job.opts, job.system, job.out
    ctx = Context(root=opts.root, live=system.live, runner=system.runner,
                  accounts=Accounts(opts.root, system.live), out=out, sleep=system.sleep,
                  clock=system.clock)
    previous = read_manifest(opts.root)
    candidates = plan.candidate_dirs([WANTS_LINK])
    existed = {d for d in candidates if ctx.path(d).is_dir()}
    ctx.facts["k3s_installed_by_dragonfly"] = bool(previous.get("k3s_installed_by_dragonfly"))
    out.write(f"{'Upgrading' if job.upgrading else 'Installing'} Dragonfly {__version__}"
              f"{'' if system.live else f' under {opts.root}'}:\n")
    failure: InstallError | None = None
    try:
        plan.apply(ctx)
    except InstallError as exc:
        failure = exc
    finally:
        created = [d for d in candidates if d not in existed and ctx.path(d).is_dir()]
        files_before = {f["path"]: f for f in previous.get("files", [])}
        files_before.update({f["path"]: f for f in ctx.files})
        ctx.files = list(files_before.values())
        write_manifest(ctx, {
            "version": __version__, "mode": job.values["server.mode"],
            "root": str(opts.root), "live": system.live, "config_written": job.write_config,
            "config_backup": job.backup,
            "dirs_created": sorted(set(previous.get("dirs_created", [])) | set(created)),
            "tinkerbell": job.tinkerbell.__dict__ if job.tinkerbell else None})
    if failure is not None:
        out.write(f"error: {failure.message}\n")
        return 3
    _summary(job, ctx)
    return 0


def _summary(job: _Install, ctx: Context) -> None:
    opts, out = job.opts, job.out
    skipped_owner = [f["path"] for f in ctx.files if not f["owner_applied"]]
    if skipped_owner and not job.system.live:
        out.write(f"Owners not applied under {opts.root} (no '{USER}' user in "
                  f"{opts.root}/etc/passwd or not running as root); the intended owners are "
                  f"recorded in {MANIFEST}.\n")
    verb = "upgraded" if job.upgrading else "installed"
    out.write(f"\nDragonfly {__version__} is {verb}.\n")
    if opts.no_start or not job.system.live:
        out.write(f"  Start it:  systemctl start dragonfly   (or: {BINARY} serve --config "
                  f"{CONFIG})\n")
    else:
        url = job.public_url()
        out.write(f"  Panel:       {url}\n")
        token = find_setup_token(job.system.runner, job.system.sleep,
                                 tries=2 if job.upgrading else 5)
        if token:
            out.write(f"  Setup:       {url}setup  with the one-time setup token\n"
                      f"  Setup token: {token}\n")
        elif not job.upgrading:
            out.write("  Setup token: not found in the journal yet: "
                      "`journalctl -u dragonfly | grep 'Setup token'`\n")
    out.write(f"  Config:      {CONFIG}\n  State:       {STATE_DIR}\n"
              "  Logs:        journalctl -u dragonfly -f\n  Status:      dragonfly status\n")


# --- uninstall --------------------------------------------------------------------------------

def uninstall(root: Path, purge: bool, yes: bool, dry_run: bool, system: System,
              out: TextIO) -> int:
    live = system.live
    if live and system.euid() != 0 and not dry_run:
        out.write("error: uninstall needs root: run `sudo dragonfly uninstall`\n")
        return 2
    manifest = read_manifest(root)
    recorded = {f["path"] for f in manifest.get("files", [])}
    plan = Plan()
    if live:
        plan.add(Run(["systemctl", "disable", "--now", SERVICE], "stop it and forget it at boot",
                     check=False))
    else:
        plan.add(Run(["systemctl", f"--root={root}", "disable", SERVICE],
                     "remove the wants/ symlink under --root", live=False, check=False))
    plan.add(Remove(UNIT))
    if live:
        plan.add(Run(["systemctl", "daemon-reload"], check=False))
        plan.add(Run(["systemctl", "reset-failed", SERVICE], check=False))
    plan.add(Remove(BINARY))
    if purge:
        if HELMCHART in recorded:
            plan.add(Run([K3S_BIN, "kubectl", "delete", "--ignore-not-found", "-f", HELMCHART],
                         "remove Tinkerbell and Dragonfly's account from k3s", check=False))
            plan.add(Remove(HELMCHART))
        if K3S_CONFIG in recorded:
            plan.add(Remove(K3S_CONFIG))
        if HOOKOS_DIR in recorded:
            plan.add(Remove(HOOKOS_DIR, recursive=True))
        plan.add(Remove(CONFIG_DIR, recursive=True))
        plan.add(Remove(STATE_DIR, recursive=True))
        if Accounts(root, live).exists(USER):
            plan.add(Run(["userdel", USER], "the service's system user", check=False))
    created = sorted(manifest.get("dirs_created", []), key=lambda p: -p.count("/"))
    plan.add(Do("remove the directories the install created, where now empty",
                lambda ctx: _remove_empty(ctx, created)))
    where = "" if live else f" under {root}"
    if dry_run:
        out.write(f"Dry run: nothing is changed. `dragonfly uninstall` would{where}:\n")
        plan.print(out, live)
        return 0
    if purge and not yes:
        if not system.interactive():
            out.write("error: --purge deletes the configuration and the database: confirm on a "
                      "terminal, or pass --yes\n")
            return 2
        question = (f"Delete {CONFIG_DIR} and {STATE_DIR}{where}, with the database of "
                    f"{_machine_count(root)} machines? This cannot be undone.")
        if not system.confirm(question):
            out.write("Nothing was changed.\n")
            return 1
    ctx = Context(root=root, live=live, runner=system.runner, accounts=Accounts(root, live),
                  out=out)
    out.write(f"Uninstalling Dragonfly{where}:\n")
    plan.apply(ctx)
    if not purge and (root / MANIFEST.lstrip("/")).exists():
        kept = [f for f in manifest.get("files", []) if (root / f["path"].lstrip("/")).exists()]
        ctx.files = kept
        write_manifest(ctx, {**{k: v for k, v in manifest.items()
                                if k not in ("files", "commands", "notes", "written_at")},
                             "uninstalled": True})
        out.write(f"Kept {CONFIG_DIR} and {STATE_DIR}: `dragonfly install` picks them up again; "
                  "`dragonfly uninstall --purge` deletes them.\n")
    if manifest.get("k3s_installed_by_dragonfly"):
        out.write("k3s was installed for Tinkerbell mode and is still there: remove it with "
                  "/usr/local/bin/k3s-uninstall.sh\n")
    out.write("Dragonfly is uninstalled.\n")
    return 0


def _remove_empty(ctx: Context, dirs: list[str]) -> None:
    for target in dirs:
        with contextlib.suppress(OSError):
            ctx.path(target).rmdir()  # only succeeds when empty


def _machine_count(root: Path) -> int:
    from dragonfly.ops.status import machine_counts

    try:
        state = Config.load(root / CONFIG.lstrip("/"), env={}).state_dir
        state_dir = root / str(state).lstrip("/")
        if not db_path(state_dir).exists():
            return 0
        return sum(machine_counts(state_dir).values())
    except (DragonflyError, OSError, ValueError):
        return 0


# --- command line -----------------------------------------------------------------------------

def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "install", help="install Dragonfly as a systemd service on this server",
        description="Copy this binary to /usr/local/bin, write /etc/dragonfly/dragonfly.toml, "
                    "create the dragonfly user and /var/lib/dragonfly, install and start the "
                    "hardened dragonfly.service. Re-run to upgrade: config and database are kept.")
    p.add_argument("--mode", choices=MODES, help="how machines are installed (default native)")
    p.add_argument("--interface", help="interface facing the machines (default: the one of the "
                                       "default route)")
    p.add_argument("--port", dest="install_port", type=int, help="panel port (default 3000)")
    p.add_argument("--dhcp-mode", dest="install_dhcp_mode", choices=DHCP_MODES,
                   help="how to answer DHCP (default auto: proxyDHCP beside the site's server)")
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="install under this directory instead of / (images, tests); commands "
                        "that would change this machine are recorded, not run")
    p.add_argument("--no-start", action="store_true", help="install but do not start")
    p.add_argument("--dry-run", action="store_true",
                   help="print every file and action without changing anything")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true",
                   help="rewrite the config from these options (the old one is backed up)")
    p.add_argument("--binary", type=Path, help="the zipapp to install (default: this one)")
    p.add_argument("--tinkerbell-version", default=DEFAULT_CHART_VERSION,
                   help=f"Tinkerbell chart version (default {DEFAULT_CHART_VERSION})")
    p.add_argument("--tinkerbell-ip",
                   help="a free address for Tinkerbell's services, held by kube-vip (default: "
                        "the boot interface's own address, through k3s's ServiceLB)")
    p.set_defaults(run=cmd_install)

    u = sub.add_parser("uninstall", help="stop and remove the service and the binary",
                       description="Stop and disable dragonfly.service, remove the unit and "
                                   "/usr/local/bin/dragonfly. Config and database stay unless "
                                   "--purge.")
    u.add_argument("--purge", action="store_true",
                   help="also delete /etc/dragonfly and /var/lib/dragonfly (asks first)")
    u.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    u.add_argument("--root", type=Path, default=Path("/"), help="uninstall from under this "
                                                                "directory instead of /")
    u.add_argument("--dry-run", action="store_true", help="print what would be removed")
    u.set_defaults(run=cmd_uninstall)


def cmd_install(args: argparse.Namespace, out: TextIO) -> int:
    opts = InstallOptions(mode=args.mode, interface=args.interface, port=args.install_port,
                          dhcp_mode=args.install_dhcp_mode, root=args.root.resolve(),
                          no_start=args.no_start, dry_run=args.dry_run, yes=args.yes,
                          force=args.force, binary=args.binary,
                          tinkerbell_version=args.tinkerbell_version,
                          tinkerbell_ip=args.tinkerbell_ip)
    return install(opts, System.for_root(opts.root), out)


def cmd_uninstall(args: argparse.Namespace, out: TextIO) -> int:
    root = args.root.resolve()
    return uninstall(root, args.purge, args.yes, args.dry_run, System.for_root(root), out)
