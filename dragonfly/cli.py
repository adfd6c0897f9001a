"""The ``dragonfly`` command.

Bare ``dragonfly`` starts the demo when nothing is installed, and prints a status summary when
it is. ``dragonfly --demo`` always starts the demo; ``dragonfly serve`` runs the appliance.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from dragonfly import __version__
from dragonfly.commands import Command, parse_args
from dragonfly.config import Config, config_path_from_env
from dragonfly.errors import DragonflyError

log = logging.getLogger("dragonfly")

DEMO_PORT = 3000
DEMO_PORT_TRIES = 50

def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        if args.command:
            run: Command = getattr(args, "run", None) or _OWN[args.command]
            if run is not cmd_serve:
                gc.enable()  # _entry turned it off for the server's start
            return run(args, out)
        config_path = args.config or config_path_from_env()
        if args.demo or not config_path.exists():
            return run_demo(args, out)
        gc.enable()
        return cmd_status(args, out)
    except DragonflyError as exc:
        sys.stderr.write(f"dragonfly: {exc.message}\n")
        return 2
    except KeyboardInterrupt:
        return 130


# --- demo -------------------------------------------------------------------------------------

def bind_first_free(host: str, port: int, tries: int) -> socket.socket:
    """A listening socket on ``port`` or the next free one after it."""
    last_error: OSError | None = None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port, port + tries):
        sock = socket.socket(family, socket.SOCK_STREAM)
        # A demo restarted within a minute keeps its port (and open tabs reconnect) despite
        # the previous run's connections in TIME_WAIT; a live listener still refuses it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            last_error = exc
            continue
        sock.listen(128)
        sock.setblocking(False)
        return sock
    raise DragonflyError(f"no free port between {port} and {port + tries - 1} on {host}: "
                         f"{last_error}")


def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    from dragonfly.compose import demo_context

    host = args.bind or "127.0.0.1"
    sock = bind_first_free(host, args.port if args.port is not None else DEMO_PORT,
                           1 if args.port is not None else DEMO_PORT_TRIES)
    port = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    banner = (f"Dragonfly {__version__} demo: {url}\n"
              "Demo Mode: Dragonfly is not installed yet. This is a preview — none of your "
              "hardware is touched.\nNothing is written to disk; press Ctrl+C to stop.\n")
    asyncio.run(_serve_app(demo_context(), sock, banner, out))
    return 0


# --- serve ------------------------------------------------------------------------------------

def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given as `serve` flags (None: not given)."""
    return {
        "server.state_dir": str(args.state_dir) if getattr(args, "state_dir", None) else None,
        "server.bind": getattr(args, "serve_bind", None),
        "server.port": getattr(args, "serve_port", None),
        "boot.interface": getattr(args, "boot_interface", None),
        "boot.dhcp_mode": getattr(args, "dhcp_mode", None),
    }


def load_config(args: argparse.Namespace) -> Config:
    path = getattr(args, "serve_config", None) or args.config or config_path_from_env()
    return Config.load(path if path.exists() else None, overrides=flag_overrides(args))


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from dragonfly.compose import readiness_report, server_context

    config = load_config(args)
    logging.getLogger().setLevel(config["server.log_level"].upper())
    pinned = {k: config[k] for k, v in flag_overrides(args).items() if v is not None}
    ctx = server_context(config, pinned)
    host, port = config["server.bind"], config["server.port"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DragonflyError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(512)
    sock.setblocking(False)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    banner = f"Dragonfly {__version__} serving on {url} (state in {config.state_dir})\n"
    from dragonfly.auth.firstrun import setup_banner

    banner += readiness_report(ctx)
    banner += setup_banner(config, url)  # the one-time setup token, until setup is done
    asyncio.run(_serve_app(ctx, sock, banner, out))
    return 0


async def _serve_app(ctx: Any, sock: socket.socket, banner: str, out: TextIO) -> None:
    from aiohttp import web

    from dragonfly.app import create_app

    app = create_app(ctx)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=2.0)
    await site.start()
    out.write(banner)
    out.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        out.write("Stopping…\n")
        out.flush()
        await runner.cleanup()


# --- status, version --------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    from dragonfly.ops.status import cmd_status as status_command

    return status_command(args, out)


def cmd_version(args: argparse.Namespace, out: TextIO) -> int:
    out.write(f"dragonfly {__version__}\n")
    return 0


# The subcommands this module runs; the others come with their parsers (``run`` default).
_OWN: dict[str, Command] = {"serve": cmd_serve, "status": cmd_status, "version": cmd_version}
