"""The proxyDHCP answer path in one process, without sockets: a component figure.

Feeds ``--count`` distinct PXE DISCOVERs (bench/dhcp_flood.py's packets: each its own MAC,
xid and option 97 UUID) through the ``Responder`` wired as ``dragonfly serve`` wires it (the
boot log's ``record`` as its event callback, a SQLite store under it, events deferred as
during a flood), then hands the boot-doctor steps over and runs the boot log's flush, and
prints CPU microseconds per DISCOVER for the answer path and for each part of the deferred
work. After the first DISCOVER every one takes the fast path (``dragonfly.edge.dhcp.fastpath``).
Deterministic enough for ``valgrind --tool=callgrind`` (instructions per answer do not depend
on the machine's load):

    .venv/bin/python bench/dhcp_answer_path.py [--count 20000] [--no-bootlog]
    bench/dhcp_callgrind.sh          # instructions per DISCOVER, answer path and write
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dhcp_flood import discover  # noqa: E402

from dragonfly.boot.log import BootLog  # noqa: E402
from dragonfly.boot.registry import BootEndpoints, BootRegistry  # noqa: E402
from dragonfly.edge.dhcp.responder import Responder  # noqa: E402
from dragonfly.store import SqliteStore  # noqa: E402


def packets(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [discover(0x10000000 + seed * count + i,
                     bytes((0x52, 0x54, 0, seed)) + i.to_bytes(2, "big"), rng.randbytes(16))
            for i in range(count)]


async def run(count: int, bootlog_on: bool, write: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "d.db")
        await store.open()
        bootlog = BootLog(store)
        await bootlog.start()
        responder = Responder(registry=BootRegistry(),
                              endpoints=BootEndpoints("10.98.0.1", 3000, "10.98.0.1"),
                              server_ip="10.98.0.1", mode="auto",
                              on_event=bootlog.record if bootlog_on else None,
                              clock=bootlog.clock)
        responder.defer_events = True
        source = ("0.0.0.0", 68)
        for data in packets(200, 1):  # warm the caches
            responder.handle(data, source)
        responder.deliver_events()
        await bootlog.flush()
        batch = packets(count, 2)
        t0 = time.process_time()
        for data in batch:
            reply = responder.handle(data, source)
            assert reply is not None
        t1 = time.process_time()
        responder.deliver_events()
        t_steps = time.process_time()
        if not write:
            bootlog._dirty.clear()  # noqa: SLF001 (callgrind: the answer path alone)
        await bootlog.flush()
        t2 = time.process_time()
        await bootlog.stop()
        await store.close()
    print(f"answer path {1e6 * (t1 - t0) / count:.1f} us/DISCOVER ({responder.counters.fast} "
          f"fast); deferred: steps to the boot log {1e6 * (t_steps - t1) / count:.1f}, its "
          f"store write {1e6 * (t2 - t_steps) / count:.1f} us/DISCOVER "
          f"({responder.counters.steps_let_go} steps let go); boot log "
          f"{'on' if bootlog_on else 'off'}; {count} DISCOVERs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--no-bootlog", action="store_true")
    ap.add_argument("--no-write", action="store_true",
                    help="skip the boot log's store write (to count the answer path alone)")
    args = ap.parse_args()
    asyncio.run(run(args.count, not args.no_bootlog, not args.no_write))
    return 0


if __name__ == "__main__":
    sys.exit(main())
