"""The data path of a TFTP download, and the worker thread that runs it.

A ``Transfer`` owns one UDP socket connected to its client (a new TID, RFC 1350). Transfers
live on a ``Worker``: a thread with its own epoll loop, so a storm of PXE clients never
competes with the web panel and API on the app's event loop, and a loop made for exactly this
(one readiness callback per datagram, one clock read per wake-up, a coarse timer sweep)
spends about half the Python time per packet that asyncio's general one does. At ~600 ACKs
per loader download, the per-ACK path decides the server's throughput; it is kept lean.

Measured (bench/README-tftp.md): one worker beats several, because the Python part of each
packet holds the GIL and worker threads then mostly hand the GIL to each other.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dragonfly.edge.tftp.codec import (
    Error,
    Invalid,
    Negotiated,
    Request,
    decode,
    encode_oack,
)

log = logging.getLogger(__name__)

_data_header = struct.Struct(">HH").pack
_OP_DATA = 3
_FAST_RESEND = 0.1  # seconds after a send from which a repeated ACK counts as a timeout


@dataclass(frozen=True)
class TransferRecord:
    """One read request and how it ended, for the boot-doctor timeline and metrics.

    outcome: complete | size_probe (the client asked for tsize, then aborted before any data,
    as EDK2 does before its real download) | refused (an ERROR was sent, nothing transferred)
    | client_error | timeout | unreachable | stopped | failed.
    """

    client_ip: str
    client_port: int
    server_ip: str
    filename: str
    ok: bool
    outcome: str
    error: str | None
    bytes_sent: int  # file bytes the client acknowledged
    size: int | None  # bytes the transfer would send (None when refused before loading)
    blksize: int
    windowsize: int
    tsize_requested: bool
    options: dict[str, str]
    retransmits: int
    started_at: float  # wall clock, seconds since the epoch
    duration: float  # seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Transfer:
    """One download. Block numbers are kept absolute (1-based) and wrap to 0 on the wire.

    Every method runs on its worker's thread. Timing uses ``worker.now`` (read once per
    wake-up of the worker), so the per-ACK path never reads the clock itself.
    """

    __slots__ = ("sock", "send", "recv", "client", "local_ip", "request", "data", "view",
                 "neg", "blksize", "lockstep", "started", "retries_allowed", "on_end",
                 "last_block", "interval", "sent_at", "base", "next", "retries",
                 "retransmits", "done", "malformed", "unexpected", "duplicates", "worker",
                 "first_ack")

    def __init__(self, *, sock: socket.socket, client: tuple[str, int], local_ip: str,
                 request: Request, data: bytes, neg: Negotiated, started: tuple[float, float],
                 timeout: float, retries: int,
                 on_end: Callable[[Transfer, TransferRecord], None]) -> None:
        self.sock, self.send, self.recv = sock, sock.send, sock.recv
        self.client, self.local_ip, self.request = client, local_ip, request
        self.data, self.view, self.neg = data, memoryview(data), neg
        self.blksize, self.lockstep = neg.blksize, neg.windowsize == 1
        self.started = started
        self.retries_allowed = retries
        self.on_end = on_end
        self.last_block = len(data) // neg.blksize + 1  # the short (maybe empty) one
        self.interval = neg.timeout or timeout
        self.sent_at = 0.0  # when the newest block (or the OACK) last went out
        self.base = 0  # lowest unacknowledged block; 0 while the OACK awaits ACK 0
        self.next = 1  # next block to send
        self.retries = 0  # consecutive retransmissions without progress
        self.retransmits = 0
        self.done = False
        self.malformed = 0
        self.unexpected = 0
        self.duplicates = 0  # repeated ACKs: the client timed out and asked again
        self.worker: Worker | None = None
        # When the client first acknowledged anything (worker.now; 0.0: not yet): from then on
        # it talks to this transfer's TID, so a request it sent later is a new request.
        self.first_ack = 0.0

    def begin(self, worker: Worker) -> None:
        self.worker = worker
        if self.neg.oack:
            self.sent_at = worker.now
            self._send(encode_oack(self.neg.oack))
        else:
            self.base = 1
            self._send_window()

    def _send(self, packet: bytes) -> None:
        try:
            self.send(packet)
        except (BlockingIOError, InterruptedError):
            pass  # socket buffer full: the retransmit timer recovers
        except ConnectionRefusedError:
            self.finish("unreachable", "client port unreachable (ICMP)")
        except OSError as exc:
            self.finish("failed", f"send failed: {exc.strerror or exc}")

    def _send_window(self) -> None:
        assert self.worker is not None
        self.sent_at = self.worker.now
        end = min(self.base + self.neg.windowsize, self.last_block + 1)
        size = self.blksize
        while self.next < end and not self.done:
            offset = (self.next - 1) * size
            self._send(_data_header(_OP_DATA, self.next & 0xFFFF)
                       + self.view[offset:offset + size])
            self.next += 1

    def on_readable(self) -> None:
        # One datagram per wake-up: in lockstep at most one ACK is waiting, and a second
        # recv() would only raise BlockingIOError, which is costly per packet in Python.
        # epoll is level-triggered, so anything left is reported again.
        try:
            data = self.recv(2048)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:
            self.finish("unreachable", "client port unreachable (ICMP)")
            return
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                self.finish("unreachable", f"client unreachable: {exc.strerror}")
            return
        if len(data) >= 4 and data[1] == 4 and data[0] == 0:  # an ACK
            wire = (data[2] << 8) | data[3]
            base = self.base
            if self.lockstep and wire == base & 0xFFFF and 1 < base < self.last_block:
                # The hot path: the block in flight is acknowledged, send the next one.
                base += 1
                self.base, self.next = base, base + 1
                self.retries = 0
                self.sent_at = self.worker.now  # type: ignore[union-attr]
                offset = (base - 1) * self.blksize
                try:
                    self.send(_data_header(_OP_DATA, base & 0xFFFF)
                              + self.view[offset:offset + self.blksize])
                except OSError:
                    self.next = base  # let the general path report or retry it
                    self._send_window()
                return
            self._on_ack(wire)
        else:
            self._on_packet(data)

    def _on_packet(self, data: bytes) -> None:
        packet = decode(data)
        if isinstance(packet, Error):
            if self.base == 0 and self.neg.tsize_requested:
                self.finish("size_probe", None)
            else:
                self.finish("client_error", f"client sent error {packet.code}: "
                            f"{packet.message[:100]}")
        elif isinstance(packet, Invalid):
            self.malformed += 1
        else:
            self.unexpected += 1

    def _on_ack(self, wire: int) -> None:
        if not self.first_ack:
            self.first_ack = self.worker.now  # type: ignore[union-attr]
        base = self.base
        if base == 0:
            if wire != 0:
                self.unexpected += 1
                return
            self.base = 1
            self.retries = 0
            self._send_window()
            return
        # Map the 16-bit number onto the blocks that can be acknowledged: base-1 .. next-1.
        acked = base - 1 + ((wire - base + 1) & 0xFFFF)
        if acked >= self.next:
            self.unexpected += 1  # stale (from before a wrap) or bogus
            return
        if acked == self.last_block:
            self.finish("complete", None)
            return
        if acked >= base:
            self.base = acked + 1
            self.retries = 0
        else:
            self.duplicates += 1
            if self.lockstep and not self._client_timed_out():
                # An echo of an ACK we already answered: resending now would start the
                # Sorcerer's Apprentice (every block sent twice from here on).
                return
            self.retransmits += self.next - self.base
            self.next = self.base
        if acked < self.next - 1:
            self.next = acked + 1  # RFC 7440: resume after the last block the client has
        self._send_window()

    def _client_timed_out(self) -> bool:
        """A repeated ACK long after our last send means the client gave up waiting for the
        block (it was lost): answer it at once instead of at our own timeout."""
        assert self.worker is not None
        return self.worker.now - self.sent_at >= min(_FAST_RESEND, self.interval / 2)

    def on_sweep(self, now: float) -> None:
        """Called by the worker's periodic sweep: retransmit or give up after a silence."""
        if now - self.sent_at < self.interval:
            return
        self.retries += 1
        if self.retries > self.retries_allowed:
            self.finish("timeout", f"no ACK after {self.retries_allowed} retransmissions")
            return
        if self.base == 0:
            self.retransmits += 1
            self.sent_at = now
            self._send(encode_oack(self.neg.oack))
        else:
            self.retransmits += self.next - self.base
            self.next = self.base
            self._send_window()

    def finish(self, outcome: str, error: str | None) -> None:
        """End the transfer and report it exactly once."""
        if self.done:
            return
        self.done = True
        if self.worker is not None:
            self.worker.forget(self)
        self.sock.close()
        size = len(self.data)
        acked = size if outcome == "complete" else max(0, self.base - 1) * self.blksize
        self.on_end(self, TransferRecord(
            client_ip=self.client[0], client_port=self.client[1], server_ip=self.local_ip,
            filename=self.request.filename, ok=outcome in ("complete", "size_probe"),
            outcome=outcome, error=error, bytes_sent=min(acked, size), size=size,
            blksize=self.blksize, windowsize=self.neg.windowsize,
            tsize_requested=self.neg.tsize_requested, options=dict(self.request.options),
            retransmits=self.retransmits, started_at=self.started[0],
            duration=time.monotonic() - self.started[1]))


class Worker:
    """A thread with its own epoll loop hosting transfers.

    Other threads talk to it only through ``submit`` and ``stop`` (a queue plus a wake-up
    pipe). Timeouts are found by a sweep every ``tick`` seconds, so a silent client is noticed
    between one interval and one interval plus a tick after our last send.
    """

    def __init__(self, name: str, *, tick: float = 0.1) -> None:
        self.name = name
        self.tick = tick
        self.active = 0  # maintained by the server, on its loop
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._inbox: collections.deque[Transfer | None] = collections.deque()  # None: stop
        self._transfers: dict[int, Transfer] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self.now = time.monotonic()  # refreshed at every wake-up; transfers time with it

    def start(self) -> None:
        self._thread.start()

    def submit(self, transfer: Transfer) -> None:
        """Thread-safe: start a transfer on this worker."""
        self._inbox.append(transfer)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full pipe: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def forget(self, transfer: Transfer) -> None:
        fd = transfer.sock.fileno()
        if self._transfers.get(fd) is transfer:
            del self._transfers[fd]
            with contextlib.suppress(OSError):  # never registered: begin failed
                self._epoll.unregister(fd)

    def _run(self) -> None:
        transfers, poll, wake_r = self._transfers, self._epoll.poll, self._wake_r
        next_sweep = time.monotonic() + self.tick
        running = True
        while running:
            events = poll(max(0.0, next_sweep - self.now))
            self.now = now = time.monotonic()
            for fd, _ in events:
                transfer = transfers.get(fd)
                if transfer is not None:
                    try:
                        transfer.on_readable()
                    except Exception:  # a bug in one transfer must not stop the others
                        log.exception("TFTP transfer to %s failed", transfer.client[0])
                        transfer.finish("failed", "internal error")
                elif fd == wake_r:
                    running = self._drain_inbox()
            if now >= next_sweep:
                next_sweep = now + self.tick
                for transfer in list(transfers.values()):
                    try:
                        transfer.on_sweep(now)
                    except Exception:
                        log.exception("TFTP transfer to %s failed", transfer.client[0])
                        transfer.finish("failed", "internal error")
        for transfer in list(transfers.values()):
            transfer.finish("stopped", "server stopping")
        while self._inbox:  # submitted but never begun
            late = self._inbox.popleft()
            if late is not None:
                late.finish("stopped", "server stopping")

    def _drain_inbox(self) -> bool:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        while self._inbox:
            transfer = self._inbox.popleft()
            if transfer is None:
                return False
            try:
                fd = transfer.sock.fileno()
                self._transfers[fd] = transfer
                self._epoll.register(fd, select.EPOLLIN)
                transfer.begin(self)
            except Exception:
                log.exception("TFTP transfer to %s failed to start", transfer.client[0])
                transfer.finish("failed", "internal error")
        return True

    def stop(self) -> None:
        """End every transfer ("stopped"), join the thread and release its descriptors.

        Blocks for as long as the worker needs to finish its current wake-up; call it from a
        thread (``asyncio.to_thread``) when on an event loop."""
        if self._closed:
            return
        if self._thread.is_alive():
            self._inbox.append(None)
            self._wake()
            self._thread.join()
        self._closed = True
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
