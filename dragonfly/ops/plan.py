"""The steps of an install or uninstall, planned first and then applied (or only printed).

Every path is a path of the target system (``/etc/dragonfly/...``) resolved under ``--root``, so
one plan serves a real install, an image being prepared, a test's temporary directory and
``--dry-run``. Steps that would change the running machine itself (creating users, talking to
systemd, installing k3s) are ``live`` steps: they run only when the target is this machine and
are otherwise recorded as skipped, with the reason, in the install manifest.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TextIO

from dragonfly.errors import DragonflyError
from dragonfly.format import decimal_bytes

MANIFEST = "/etc/dragonfly/install.json"


class InstallError(DragonflyError):
    """An install step failed; the message says what to do about it."""


# --- running commands -------------------------------------------------------------------------

@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, timeout: float = 120.0,
                 env: Mapping[str, str] | None = None) -> CommandResult: ...


def run_command(argv: Sequence[str], *, timeout: float = 120.0,
                env: Mapping[str, str] | None = None) -> CommandResult:
    """The real runner: a subprocess whose failure is a result, never an exception."""
    merged = {**os.environ, **env} if env else None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=merged, check=False)
    except FileNotFoundError:
        return CommandResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{argv[0]}: no answer within {timeout:.0f} s")
    return CommandResult(done.returncode, done.stdout, done.stderr)


# --- owners -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    user: str
    group: str

    def __str__(self) -> str:
        return f"{self.user}:{self.group}"


ROOT_OWNER = Owner("root", "root")


def _lookup_file(path: Path, name: str) -> int | None:
    """The id of ``name`` in a passwd- or group-format file, or None."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


class Accounts:
    """User and group ids as the target system knows them.

    On this machine that is NSS (pwd/grp); under ``--root`` it is the target's own
    ``etc/passwd`` and ``etc/group``, since the host's ids mean nothing inside an image.
    """

    def __init__(self, root: Path, live: bool) -> None:
        self.root = root
        self.live = live

    def uid(self, name: str) -> int | None:
        if name == "root":
            return 0
        if self.live:
            try:
                return pwd.getpwnam(name).pw_uid
            except KeyError:
                return None
        return _lookup_file(self.root / "etc/passwd", name)

    def gid(self, name: str) -> int | None:
        if name == "root":
            return 0
        if self.live:
            try:
                return grp.getgrnam(name).gr_gid
            except KeyError:
                return None
        return _lookup_file(self.root / "etc/group", name)

    def exists(self, user: str) -> bool:
        return self.uid(user) is not None


# --- context and manifest ---------------------------------------------------------------------

@dataclass
class Context:
    """What steps need while applying: where the target is and how to touch it."""

    root: Path
    live: bool
    runner: Runner
    accounts: Accounts
    out: TextIO
    euid: int = field(default_factory=os.geteuid)
    files: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # extra manifest entries
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def path(self, target: str | PurePosixPath) -> Path:
        """The real path of a target-system path."""
        return self.root / str(target).lstrip("/")

    def chown(self, target: str, owner: Owner) -> bool:
        """Give ``target`` to ``owner`` when that is possible; say whether it was done."""
        uid, gid = self.accounts.uid(owner.user), self.accounts.gid(owner.group)
        if uid is None or gid is None or self.euid != 0:
            return False
        os.chown(self.path(target), uid, gid, follow_symlinks=False)
        return True

    def record_file(self, target: str, kind: str, mode: int, owner: Owner, applied: bool,
                    **extra: Any) -> None:
        self.files = [f for f in self.files if f["path"] != target]
        self.files.append({"path": target, "kind": kind, "mode": f"{mode:04o}",
                           "owner": str(owner), "owner_applied": applied, **extra})

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the last install under ``root``, or {} when there is none."""
    path = root / MANIFEST.lstrip("/")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(dest: Path, data: bytes, mode: int) -> None:
    # Write beside the destination and rename over it: a reader (or a running service whose
    # binary is being replaced) sees the old file or the new one, never half of one.
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).chmod(mode)
        Path(tmp).replace(dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- steps ------------------------------------------------------------------------------------

class Step(Protocol):
    live: bool

    def describe(self) -> str: ...

    def apply(self, ctx: Context) -> None: ...

    def targets(self) -> list[str]: ...


@dataclass
class MakeDir:
    target: str
    mode: int
    owner: Owner = ROOT_OWNER
    live: bool = False

    def describe(self) -> str:
        return f"directory {self.target} ({self.mode:04o} {self.owner})"

    def targets(self) -> list[str]:
        return [self.target]

    def apply(self, ctx: Context) -> None:
        path = ctx.path(self.target)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(self.mode)
        applied = ctx.chown(self.target, self.owner)
        ctx.record_file(self.target, "dir", self.mode, self.owner, applied)


@dataclass
class WriteFile:
    target: str
    content: bytes
    mode: int
    owner: Owner = ROOT_OWNER
    why: str = ""
    live: bool = False

    def describe(self) -> str:
        why = f": {self.why}" if self.why else ""
        size = decimal_bytes(len(self.content))
        return f"file {self.target} ({self.mode:04o} {self.owner}, {size}){why}"

    def targets(self) -> list[str]:
        return [self.target]

    def apply(self, ctx: Context) -> None:
        _write_atomic(ctx.path(self.target), self.content, self.mode)
        ctx.record_file(self.target, "file", self.mode, self.owner,
                        ctx.chown(self.target, self.owner),
                        sha256=hashlib.sha256(self.content).hexdigest())


@dataclass
class CopyFile:
    source: Path
    target: str
    mode: int
    owner: Owner = ROOT_OWNER
    why: str = ""
    live: bool = False

    def describe(self) -> str:
        size = decimal_bytes(self.source.stat().st_size) if self.source.exists() else "missing!"
        why = f": {self.why}" if self.why else ""
        return f"file {self.target} ({self.mode:04o} {self.owner}, {size}) from {self.source}{why}"

    def targets(self) -> list[str]:
        return [self.target]

    def apply(self, ctx: Context) -> None:
        dest = ctx.path(self.target)
        if dest.exists() and dest.samefile(self.source):
            ctx.say(f"  ({self.target} is the running binary: kept)")
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
            os.close(fd)
            try:
                shutil.copyfile(self.source, tmp)
                Path(tmp).chmod(self.mode)
                Path(tmp).replace(dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        ctx.record_file(self.target, "file", self.mode, self.owner,
                        ctx.chown(self.target, self.owner), sha256=sha256_file(dest))


@dataclass
class Remove:
    target: str
    recursive: bool = False
    live: bool = False

    def describe(self) -> str:
        return f"remove {self.target}{' and everything in it' if self.recursive else ''}"

    def targets(self) -> list[str]:
        return []

    def apply(self, ctx: Context) -> None:
        path = ctx.path(self.target)
        if path.is_dir() and not path.is_symlink():
            if self.recursive:
                shutil.rmtree(path)
            else:
                path.rmdir()
        else:
            path.unlink(missing_ok=True)


@dataclass
class Run:
    """A command. ``live`` commands touch this machine and are skipped under ``--root``."""

    argv: list[str]
    why: str = ""
    live: bool = True
    check: bool = True
    timeout: float = 120.0
    hint: str = ""

    def describe(self) -> str:
        why = f"  # {self.why}" if self.why else ""
        return f"run: {shlex.join(self.argv)}{why}"

    def targets(self) -> list[str]:
        return []

    def apply(self, ctx: Context) -> None:
        result = ctx.runner(self.argv, timeout=self.timeout)
        ctx.commands.append({"argv": self.argv, "status": "ran",
                             "returncode": result.returncode})
        if self.check and not result.ok:
            hint = f"\n{self.hint}" if self.hint else ""
            raise InstallError(f"`{shlex.join(self.argv)}` failed ({result.returncode}): "
                               f"{result.output()[-2000:]}{hint}")


@dataclass
class Do:
    """A step of custom logic (waiting for readiness, pruning caches), described in words."""

    description: str
    fn: Callable[[Context], None]
    live: bool = False
    paths: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return self.description

    def targets(self) -> list[str]:
        return list(self.paths)

    def apply(self, ctx: Context) -> None:
        self.fn(ctx)


# --- the plan ---------------------------------------------------------------------------------

@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def print(self, out: TextIO, live: bool) -> None:
        for number, step in enumerate(self.steps, 1):
            skipped = "" if live or not step.live else "   [skipped: --root is not this machine]"
            out.write(f"  {number:2d}. {step.describe()}{skipped}\n")

    def candidate_dirs(self, extra: Sequence[str] = ()) -> list[str]:
        """Every ancestor directory of every path the plan creates, deepest last."""
        found: set[str] = set()
        for target in [*(t for s in self.steps for t in s.targets()), *extra]:
            for parent in PurePosixPath(target).parents:
                if str(parent) != "/":
                    found.add(str(parent))
        return sorted(found, key=lambda p: (p.count("/"), p))

    def apply(self, ctx: Context) -> None:
        for step in self.steps:
            if step.live and not ctx.live:
                if isinstance(step, Run):
                    ctx.commands.append({"argv": step.argv, "status": "skipped (--root)"})
                else:
                    ctx.notes.append(f"skipped (--root): {step.describe()}")
                continue
            ctx.say(f"  - {step.describe()}")
            step.apply(ctx)


def write_manifest(ctx: Context, data: Mapping[str, Any]) -> None:
    body = {**data, **ctx.facts, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": sorted(ctx.files, key=lambda f: str(f["path"])),
            "commands": ctx.commands, "notes": ctx.notes}
    _write_atomic(ctx.path(MANIFEST), (json.dumps(body, indent=2) + "\n").encode(), 0o644)
