"""The ``dragonfly`` command line's shape: the parser, with the subcommands that other modules
add. Kept apart from ``cli`` (which runs the commands) so the panel's CLI reference can read
it without importing the server.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from dragonfly import __version__
from dragonfly.config import DHCP_MODES

Command = Callable[[argparse.Namespace, TextIO], int]

# Modules that add subcommands: each has ``add_commands(subparsers)``, which sets each
# subcommand's handler as the parser default ``run``. Imported only when the parser is built
# (``cli`` runs serve, status and version itself).
COMMAND_MODULES: tuple[str, ...] = ("dragonfly.auth.cli", "dragonfly.ops.install",
                                     "dragonfly.boot.discovery_image", "dragonfly.images.cli")


class _NotFront(Exception):
    """The front parser cannot read these arguments: the full parser will, or say why not."""


class _FrontParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NotFront(message)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, read by the full parser only when it names a subcommand or asks for
    help: building that parser imports every subcommand's module, which the demo and the
    status summary (no subcommand) never use, and they are what starts first."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" not in args and "--help" not in args:
        front = _FrontParser(prog="dragonfly", add_help=False)
        _add_front_options(front)
        try:
            namespace, rest = front.parse_known_args(args)
        except _NotFront:
            rest = args
        if not rest:
            namespace.command = None
            return namespace
    return build_parser().parse_args(args)


def _add_front_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"dragonfly {__version__}")
    parser.add_argument("--demo", action="store_true",
                        help="start the in-memory demo even when Dragonfly is installed")
    parser.add_argument("--bind", help="address for the demo to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int,
                        help="port for the demo (default 3000, or the next free one)")
    parser.add_argument("--config", type=Path,
                        help="config file (default $DRAGONFLY_CONFIG or "
                             "/etc/dragonfly/dragonfly.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dragonfly",
        description="Bare-metal provisioning in one file. Run with no arguments to try the "
                    "demo (nothing installed) or to see this server's status (installed).",
        epilog="Docs: run the demo and open Docs, or see README.md.")
    _add_front_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the appliance from its config",
                           description="Run Dragonfly: panel, API, and the boot services. Flags "
                                       "override the config file for this run.")
    serve.add_argument("--config", type=Path, dest="serve_config", help=argparse.SUPPRESS)
    serve.add_argument("--state-dir", type=Path, help="database and boot files directory")
    serve.add_argument("--bind", dest="serve_bind", help="address of the panel/API/boot HTTP")
    serve.add_argument("--port", dest="serve_port", type=int, help="port of the panel/API")
    serve.add_argument("--boot-interface", help="interface facing the machines")
    serve.add_argument("--dhcp-mode", choices=DHCP_MODES, help="how to answer DHCP")

    from dragonfly.ops.status import configure_parser

    configure_parser(sub.add_parser(
        "status", help="is Dragonfly installed and running; machines by state"))
    sub.add_parser("version", help="print the version")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(sub)
    return parser



