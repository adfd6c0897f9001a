"""``dragonfly status`` (and bare ``dragonfly`` once installed): what is here and is it up."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dragonfly import __version__
from dragonfly.config import Config
from dragonfly.errors import DragonflyError
from dragonfly.server import DB_NAME


@dataclass
class Status:
    installed: bool
    config_path: Path
    version: str = __version__
    service: str = "unknown"
    mode: str = ""
    url: str = ""
    state_dir: str = ""
    machines: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _service_state() -> str:
    if shutil.which("systemctl") is None:
        return "no systemd"
    result = subprocess.run(["systemctl", "is-active", "dragonfly.service"],
                            capture_output=True, text=True, timeout=10, check=False)
    return result.stdout.strip() or "unknown"


def _machine_counts(db_path: Path) -> dict[str, int]:
    # Read-only and without migrating: status must never change the database.
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT data FROM docs WHERE kind = 'machine'").fetchall()
    finally:
        db.close()
    return dict(Counter(json.loads(data)["state"] for (data,) in rows))


def collect_status(config_path: Path) -> Status:
    status = Status(installed=config_path.exists(), config_path=config_path)
    if not status.installed:
        return status
    try:
        config = Config.load(config_path)
    except DragonflyError as exc:
        status.problems.append(exc.message)
        return status
    status.service = _service_state()
    status.mode = config["server.mode"]
    bind = config["server.bind"]
    shown = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    status.url = config["server.public_url"] or f"http://{shown}:{config['server.port']}/"
    status.state_dir = str(config.state_dir)
    db_path = config.state_dir / DB_NAME
    if db_path.exists():
        try:
            status.machines = _machine_counts(db_path)
        except sqlite3.Error as exc:
            status.problems.append(f"cannot read {db_path}: {exc}")
    else:
        status.problems.append(f"no database yet at {db_path} (has the service started?)")
    return status


def format_status(status: Status) -> str:
    if not status.installed:
        return (f"Dragonfly {status.version} is not installed (no {status.config_path}).\n"
                "Run `dragonfly` to try the demo, or `sudo dragonfly install` to install.\n")
    lines = [f"Dragonfly {status.version}",
             f"  config:    {status.config_path}",
             f"  service:   {status.service}",
             f"  mode:      {status.mode}",
             f"  panel:     {status.url}",
             f"  state:     {status.state_dir}"]
    total = sum(status.machines.values())
    by_state = ", ".join(f"{n} {s}" for s, n in sorted(status.machines.items())) or "none yet"
    lines.append(f"  machines:  {total} ({by_state})")
    lines += [f"  problem:   {p}" for p in status.problems]
    return "\n".join(lines) + "\n"
