"""Runs Dragonfly's DHCP service and a stand-in boot HTTP server inside a lab namespace.

Started by the lab tests with ``ip netns exec NS python runner.py ...``. Every on_event call
and every HTTP request is appended as one JSON line to --events, so the test (outside the
namespace) can follow the boot. Exit status 3 means the service refused to start
(DhcpConflict), with the message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dragonfly.boot import BootRegistry  # noqa: E402
from dragonfly.edge.dhcp import DhcpConflict, DhcpService, FullModeSettings  # noqa: E402
from dragonfly.store import SqliteStore  # noqa: E402

SCRIPT = "#!ipxe\necho DRAGONFLY-SCRIPT-OK ${net0/mac}\n"


class Recorder:
    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the run

    def __call__(self, mac: str, step: str, detail: dict[str, Any],
                 at: float | None = None) -> None:
        self.fh.write(json.dumps({"t": at or time.time(), "mac": mac, "step": step,
                                  "detail": detail}) + "\n")


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interface", required=True)
    ap.add_argument("--server-ip", required=True)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--events", required=True)
    ap.add_argument("--store")
    ap.add_argument("--range")
    ap.add_argument("--reservation", action="append", default=[])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--no-option43", action="store_true")
    ap.add_argument("--uefi-loader", default="ipxe.efi")
    args = ap.parse_args()

    record = Recorder(Path(args.events))

    async def script(request: web.Request) -> web.Response:
        record(request.match_info["mac"], "http_script", {"from": request.remote})
        return web.Response(text=SCRIPT)

    app = web.Application()
    app.router.add_get("/boot/{mac}.ipxe", script)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.server_ip, args.http_port)
    await site.start()
    http_port = runner.addresses[0][1]  # the real port when --http-port is 0

    store = SqliteStore(args.store) if args.store else None
    if store is not None:
        await store.open()
    full = (FullModeSettings.parse(args.range, args.reservation, force=args.force)
            if args.range else None)
    service = DhcpService(
        interface=args.interface, server_ip=args.server_ip, http_port=http_port,
        mode=args.mode, store=store, full=full, on_event=record,
        registry=BootRegistry(loaders={"uefi-x64": args.uefi_loader}),
        pxe_discovery_control=not args.no_option43)
    try:
        await service.start()
    except DhcpConflict as exc:
        print(exc.message, file=sys.stderr, flush=True)
        await runner.cleanup()
        if store is not None:
            await store.close()
        return 3
    print("READY", json.dumps({"dhcp": service.bound_ports, "http": http_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    record("-", "counters", service.counters.as_dict())
    await runner.cleanup()
    if store is not None:
        await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
