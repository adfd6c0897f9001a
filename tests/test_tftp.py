"""Dragonfly's TFTP server against real clients (curl, busybox, tftp-hpa) and a raw client
written here for exact assertions on options, errors, windows, timeouts and counters."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import string
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dragonfly.edge.tftp import TftpServer, TransferRecord, codec
from dragonfly.edge.tftp.codec import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Invalid,
    OptionAck,
    Refusal,
    Request,
    check_filename,
    decode,
    encode,
    negotiate,
)

LOADER_DIR = Path("/usr/lib/ipxe")
LOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("DRAGONFLY_SKIP_LAB") == "1":
            pytest.skip(f"{tool} missing (DRAGONFLY_SKIP_LAB=1)")
        pytest.fail(f"{tool} not found: apt-get install {package}")
    return path


def loader(name: str) -> Path:
    path = LOADER_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} missing: apt-get install ipxe")
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


# --- fixtures -----------------------------------------------------------------------------


class Records(list[TransferRecord]):
    """on_transfer target that can be awaited."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def __call__(self, record: TransferRecord) -> None:
        self.append(record)
        self.changed.set()

    async def wait(self, count: int, within: float = 10.0) -> list[TransferRecord]:
        async with asyncio.timeout(within):
            while len(self) < count:
                self.changed.clear()
                await self.changed.wait()
        return list(self)


@dataclass
class Served:
    server: TftpServer
    records: Records
    asked: list[str]
    files: dict[str, Path | bytes]
    root: Path

    @property
    def port(self) -> int:
        return self.server.port

    async def wait_records(self, count: int, within: float = 10.0) -> list[TransferRecord]:
        return await self.records.wait(count, within)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    files: dict[str, Path | bytes] = {name: loader(name) for name in LOADERS}
    text = tmp_path / "notes.txt"
    text.write_bytes(b"line one\nline two\r\nend\n")
    files["notes.txt"] = text
    files["dir/sub.bin"] = b"\x00\x01" * 700
    files["empty"] = b""
    files["exact512"] = bytes(range(256)) * 2
    records = Records()
    asked: list[str] = []

    def resolver(path: str) -> Path | bytes | None:
        asked.append(path)
        if path == "boom":
            raise RuntimeError("resolver bug")
        return files.get(path)

    server = TftpServer(resolver, host="127.0.0.1", port=0, on_transfer=records,
                        timeout=0.2, retries=2)
    await server.start()
    try:
        yield Served(server, records, asked, files, tmp_path)
    finally:
        await server.stop()
    assert server.port > 0


async def run(*cmd: str, within: float = 60) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out


# --- a raw client ---------------------------------------------------------------------------


class RawClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # 3.11's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def recv(self, within: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), within)

    async def recv_packet(self, within: float = 2.0) -> tuple[object, tuple[str, int]]:
        data, addr = await self.recv(within)
        return decode(data), addr

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def raw_client() -> RawClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(RawClient, local_addr=("127.0.0.1", 0))
    return proto


@dataclass
class Download:
    content: bytes = b""
    oack: dict[str, str] | None = None
    error: Error | None = None
    blocks_per_ack: list[int] = field(default_factory=list)


async def download(port: int, name: str, options: dict[str, str] | None = None,
                   mode: str = "octet") -> Download:
    """A correct client: lockstep, or windowed when windowsize was acknowledged."""
    client = await raw_client()
    result = Download()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, name, mode, options),
                    ("127.0.0.1", port))
        blksize, window = 512, 1
        expect, parts, since_ack = 1, [], 0
        while True:
            packet, peer = await client.recv_packet()
            if isinstance(packet, Error):
                result.error = packet
                return result
            if isinstance(packet, OptionAck):
                result.oack = packet.options
                blksize = int(packet.options.get("blksize", 512))
                window = int(packet.options.get("windowsize", 1))
                client.send(codec.encode_ack(0), peer)
                continue
            assert isinstance(packet, Data), packet
            assert packet.block == expect & 0xFFFF, (packet.block, expect)
            parts.append(packet.payload)
            since_ack += 1
            last = len(packet.payload) < blksize
            if last or since_ack == window:
                result.blocks_per_ack.append(since_ack)
                client.send(codec.encode_ack(packet.block), peer)
                since_ack = 0
            expect += 1
            if last:
                result.content = b"".join(parts)
                return result
    finally:
        client.close()


# --- real clients ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOADERS)
async def test_curl_downloads_each_loader_byte_exact(served: Served, tmp_path: Path,
                                                     name: str) -> None:
    curl = need("curl", "curl")
    out = tmp_path / "out"
    rc, log = await run(curl, "-sS", "--tftp-blksize", "1456", "-o", str(out),
                        f"tftp://127.0.0.1:{served.port}/{name}")
    assert rc == 0, log
    assert sha(out.read_bytes()) == sha(loader(name).read_bytes())
    (record,) = await served.wait_records(1)
    size = loader(name).stat().st_size
    assert (record.ok, record.outcome, record.filename) == (True, "complete", name)
    assert (record.bytes_sent, record.size, record.blksize) == (size, size, 1456)
    assert record.tsize_requested and record.client_ip == "127.0.0.1"
    assert record.server_ip == "127.0.0.1" and record.duration > 0


async def test_busybox_download_with_blksize(served: Served, tmp_path: Path) -> None:
    busybox = need("busybox", "busybox-static")
    out = tmp_path / "out"
    rc, log = await run(busybox, "tftp", "-g", "-r", "ipxe.efi", "-l", str(out), "-b", "1428",
                        "127.0.0.1", str(served.port))
    assert rc == 0, log
    assert out.read_bytes() == loader("ipxe.efi").read_bytes()
    (record,) = await served.wait_records(1)
    assert record.blksize == 1428 and record.options.get("blksize") == "1428"


async def test_tftp_hpa_plain_rfc1350_and_netascii(served: Served, tmp_path: Path) -> None:
    tftp = need("tftp", "tftp-hpa")
    binary, text = tmp_path / "got-undionly.kpxe", tmp_path / "got-notes.txt"
    rc, log = await run(tftp, "-m", "binary", "127.0.0.1", str(served.port),
                        "-c", "get", "undionly.kpxe", str(binary))
    assert rc == 0 and binary.read_bytes() == loader("undionly.kpxe").read_bytes(), log
    # tftp-hpa's default mode is netascii: the server converts, the client converts back.
    rc, log = await run(tftp, "127.0.0.1", str(served.port), "-c", "get", "notes.txt",
                        str(text))
    assert rc == 0, log
    assert text.read_bytes() == b"line one\nline two\r\nend\n"
    records = await served.wait_records(2)
    assert records[0].options == {} and records[0].blksize == 512  # no options: no OACK
    assert records[1].size == len(b"line one\r\nline two\r\0\r\nend\r\n")


async def test_sixty_concurrent_busybox_downloads(served: Served, tmp_path: Path) -> None:
    busybox = need("busybox", "busybox-static")
    want = loader("ipxe.efi").read_bytes()
    outs = [tmp_path / f"out{i}" for i in range(60)]
    results = await asyncio.gather(*(
        run(busybox, "tftp", "-g", "-r", "ipxe.efi", "-l", str(out), "-b", "1456",
            "127.0.0.1", str(served.port), within=120) for out in outs))
    assert all(rc == 0 for rc, _ in results), [log for rc, log in results if rc][:3]
    assert all(out.read_bytes() == want for out in outs)
    records = await served.wait_records(60)
    # One record per transfer. (Client ports need not all differ: the kernel may hand a
    # finished client's ephemeral port to one that starts later.)
    assert len(records) == 60
    assert all(r.ok and r.bytes_sent == len(want) for r in records)
    assert served.server.stats.completed == 60 and served.server.active == 0


async def test_curl_reports_refusals(served: Served, tmp_path: Path) -> None:
    curl = need("curl", "curl")
    rc, log = await run(curl, "-sS", "-o", str(tmp_path / "x"),
                        f"tftp://127.0.0.1:{served.port}/no-such-loader.efi")
    assert rc == 68, log  # curl's CURLE_TFTP_NOTFOUND: it got ERROR 1 "file not found"


# --- options, exactly -------------------------------------------------------------------------


async def test_oack_lists_exactly_the_accepted_options(served: Served) -> None:
    size = loader("ipxe.efi").stat().st_size
    got = await download(served.port, "ipxe.efi", {
        "blksize": "1024", "tsize": "0", "timeout": "3", "x-unknown": "1"})
    assert got.oack == {"blksize": "1024", "tsize": str(size), "timeout": "3"}
    assert sha(got.content) == sha(loader("ipxe.efi").read_bytes())


async def test_no_options_means_no_oack(served: Served) -> None:
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "dir/sub.bin"), ("127.0.0.1", served.port))
        packet, peer = await client.recv_packet()
        assert isinstance(packet, Data) and packet.block == 1 and len(packet.payload) == 512
        assert peer[1] != served.port  # a new TID, as RFC 1350 wants
    finally:
        client.close()


@pytest.mark.parametrize(("asked", "granted"), [
    ("70000", "65464"),  # clamped to the RFC 2348 maximum
    ("8", "8"),
    ("1456", "1456"),
    ("7", None),  # below the minimum: ignored, not echoed
    ("lots", None),
])
async def test_blksize_negotiation(served: Served, asked: str, granted: str | None) -> None:
    got = await download(served.port, "snponly.efi", {"blksize": asked, "tsize": "0"})
    assert got.oack is not None and got.oack.get("blksize") == granted
    assert got.content == loader("snponly.efi").read_bytes()


async def test_tsize_alone_and_empty_and_exact_multiple(served: Served) -> None:
    got = await download(served.port, "dir/sub.bin", {"tsize": "0"})
    assert got.oack == {"tsize": "1400"} and got.content == b"\x00\x01" * 700
    empty = await download(served.port, "empty")
    assert empty.content == b"" and empty.error is None
    exact = await download(served.port, "exact512")  # ends with an empty DATA block
    assert exact.content == bytes(range(256)) * 2


async def test_windowsize_sends_a_window_per_ack(served: Served) -> None:
    got = await download(served.port, "ipxe.efi", {"blksize": "1456", "windowsize": "8"})
    assert got.oack == {"blksize": "1456", "windowsize": "8"}
    assert got.content == loader("ipxe.efi").read_bytes()
    assert set(got.blocks_per_ack[:-1]) == {8}


async def test_block_numbers_wrap_past_65535(served: Served) -> None:
    blob = os.urandom(8 * 65540 + 3)  # 65541 blocks of 8 bytes
    served.files["big"] = blob
    got = await download(served.port, "big", {"blksize": "8", "windowsize": "64"})
    assert got.content == blob
    (record,) = await served.wait_records(1)
    assert record.ok and record.bytes_sent == len(blob)


async def test_netascii_conversion(served: Served) -> None:
    got = await download(served.port, "notes.txt", mode="netascii")
    assert got.content == b"line one\r\nline two\r\0\r\nend\r\n"


async def test_windowed_retransmission_resumes_after_last_ack(served: Served) -> None:
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "ipxe.efi", "octet",
                                         {"blksize": "512", "windowsize": "4"}),
                    ("127.0.0.1", served.port))
        oack, peer = await client.recv_packet()
        assert isinstance(oack, OptionAck)
        client.send(codec.encode_ack(0), peer)
        blocks = [(await client.recv_packet())[0] for _ in range(4)]
        assert [b.block for b in blocks if isinstance(b, Data)] == [1, 2, 3, 4]
        client.send(codec.encode_ack(2), peer)  # "lost" 3 and 4: resume at 3 (RFC 7440)
        again = [(await client.recv_packet())[0] for _ in range(4)]
        assert [b.block for b in again if isinstance(b, Data)] == [3, 4, 5, 6]
        client.send(codec.encode_error(0, "done"), peer)
        (record,) = await served.wait_records(1)
        assert record.outcome == "client_error" and record.bytes_sent == 2 * 512
    finally:
        client.close()


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "code"), [
    ("../etc/passwd", ErrorCode.ACCESS_VIOLATION),
    ("dir/../../etc/passwd", ErrorCode.ACCESS_VIOLATION),
    ("..", ErrorCode.ACCESS_VIOLATION),
    ("/etc/passwd", ErrorCode.ACCESS_VIOLATION),
    ("/ipxe.efi", ErrorCode.ACCESS_VIOLATION),
    ("..\\..\\etc\\passwd", ErrorCode.ACCESS_VIOLATION),
    ("C:\\boot\\ipxe.efi", ErrorCode.ACCESS_VIOLATION),
    ("dir/\x01x", ErrorCode.ACCESS_VIOLATION),
    ("no-such.efi", ErrorCode.FILE_NOT_FOUND),
    ("", ErrorCode.FILE_NOT_FOUND),
])
async def test_refused_reads_get_an_error_packet(served: Served, name: str,
                                                 code: ErrorCode) -> None:
    got = await download(served.port, name, {"tsize": "0"})
    assert got.error is not None and got.error.code == code and got.error.message
    assert got.content == b"" and got.oack is None
    (record,) = await served.wait_records(1)
    assert (record.ok, record.outcome, record.filename) == (False, "refused", name)
    if code == ErrorCode.ACCESS_VIOLATION:
        assert served.asked == []  # refused before the resolver is ever asked


async def test_write_request_refused(served: Served) -> None:
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_WRQ, "ipxe.efi"), ("127.0.0.1", served.port))
        packet, _ = await client.recv_packet()
        assert isinstance(packet, Error) and packet.code == ErrorCode.ACCESS_VIOLATION
        assert "read-only" in packet.message
    finally:
        client.close()
    assert served.asked == []
    (record,) = await served.wait_records(1)
    assert record.outcome == "refused" and "read-only" in (record.error or "")


async def test_unsupported_mode_and_broken_resolver(served: Served) -> None:
    got = await download(served.port, "ipxe.efi", mode="mail")
    assert got.error is not None and got.error.code == ErrorCode.ILLEGAL_OPERATION
    got = await download(served.port, "boom")
    assert got.error is not None and got.error.code == ErrorCode.NOT_DEFINED
    assert "resolver" in got.error.message
    again = await download(served.port, "dir/sub.bin")  # still serving
    assert again.content == b"\x00\x01" * 700


async def test_busy_server_refuses(tmp_path: Path) -> None:
    server = TftpServer(lambda p: b"x" * 5000, host="127.0.0.1", port=0, max_transfers=1,
                        timeout=0.2, retries=1)
    await server.start()
    holder = await raw_client()
    try:
        holder.send(codec.encode_request(codec.OP_RRQ, "a"), ("127.0.0.1", server.port))
        await holder.recv()  # DATA 1, never acknowledged
        got = await download(server.port, "b")
        assert got.error is not None and "busy" in got.error.message
    finally:
        holder.close()
        await server.stop()


async def test_clients_outside_the_boot_networks_are_refused() -> None:
    asked: list[str] = []
    seen: list[str] = []

    def allow(ip: str) -> bool:
        seen.append(ip)
        return ip != "127.0.0.1"

    server = TftpServer(lambda p: asked.append(p) or b"loader", host="127.0.0.1", port=0,
                        timeout=0.2, retries=1, allow_client=allow)
    await server.start()
    try:
        got = await download(server.port, "ipxe.efi")
        assert got.error is not None and got.error.code == ErrorCode.ACCESS_VIOLATION
        assert "boot.allowed_networks" in got.error.message
        assert asked == [] and seen == ["127.0.0.1"] and server.stats.refused == 1
    finally:
        await server.stop()


# --- robustness -------------------------------------------------------------------------------


async def test_malformed_datagrams_are_dropped_and_counted(served: Served) -> None:
    client = await raw_client()
    try:
        target = ("127.0.0.1", served.port)
        junk = (b"\x00", b"\x00\x09zz", b"\x00\x01no-terminator", b"\x00\x01\xff\xfe\x00o\x00")
        for datagram in junk:
            client.send(datagram, target)
        client.send(codec.encode_ack(1), target)  # well-formed, but not a request
        client.send(codec.encode_data(1, b"x"), target)
        got = await download(served.port, "dir/sub.bin")  # still serving
        assert got.content == b"\x00\x01" * 700
        stats = served.server.stats
        assert (stats.malformed, stats.unexpected, stats.requests) == (4, 2, 1)
        with pytest.raises(TimeoutError):
            await client.recv(0.2)  # nothing was answered
    finally:
        client.close()


async def test_malformed_on_a_transfer_socket(served: Served) -> None:
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "dir/sub.bin"), ("127.0.0.1", served.port))
        _, peer = await client.recv_packet()
        client.send(b"\x00", peer)
        client.send(b"\x00\x03\x00\x01data", peer)  # DATA to a reader: out of place
        client.send(codec.encode_ack(1), peer)
        packet, _ = await client.recv_packet()
        assert isinstance(packet, Data) and packet.block == 2
        client.send(codec.encode_ack(2), peer)
        packet, _ = await client.recv_packet()
        assert isinstance(packet, Data) and packet.block == 3 and len(packet.payload) == 376
        client.send(codec.encode_ack(3), peer)
        (record,) = await served.wait_records(1)
        assert record.ok
        assert (served.server.stats.malformed, served.server.stats.unexpected) == (1, 1)
    finally:
        client.close()


async def test_duplicate_request_does_not_start_a_second_transfer(served: Served) -> None:
    client = await raw_client()
    try:
        rrq = codec.encode_request(codec.OP_RRQ, "dir/sub.bin")
        client.send(rrq, ("127.0.0.1", served.port))
        client.send(rrq, ("127.0.0.1", served.port))
        first, peer = await client.recv_packet()
        assert isinstance(first, Data) and first.block == 1
        with pytest.raises(TimeoutError):
            await client.recv(0.1)  # no second DATA 1 from another TID
        client.send(codec.encode_error(0, "bye"), peer)
        await served.wait_records(1)
        assert served.server.stats.duplicate_requests == 1
    finally:
        client.close()


async def test_retransmitted_request_is_ignored_even_after_completion(served: Served) -> None:
    """An RRQ repeated before the client acknowledged anything is a retransmission, even when
    the listener only reads it after the transfer ended; one sent later is a new request."""
    client = await raw_client()
    try:
        rrq = codec.encode_request(codec.OP_RRQ, "empty")
        client.send(rrq, ("127.0.0.1", served.port))
        data, peer = await client.recv_packet()
        assert isinstance(data, Data) and data.payload == b""
        client.send(rrq, ("127.0.0.1", served.port))  # a retransmission, sent before our ACK
        await asyncio.sleep(0.05)
        client.send(codec.encode_ack(1), peer)
        (record,) = await served.wait_records(1)
        assert record.outcome == "complete"
        with pytest.raises(TimeoutError):
            await client.recv(0.2)  # no second transfer
        assert served.server.stats.duplicate_requests == 1
        client.send(rrq, ("127.0.0.1", served.port))  # asked again, later: served
        data, _ = await client.recv_packet()
        assert isinstance(data, Data) and data.block == 1
    finally:
        client.close()


async def test_two_sockets_sharing_a_port_are_both_served(served: Served) -> None:
    """Linux lets connected UDP sockets share a local port (seen with 200 busybox clients):
    a request from a port whose first transfer is already acknowledged is a new one."""
    loop = asyncio.get_running_loop()
    want = b"\x00\x01" * 700
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for sock in (first, second):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
        first.bind(("127.0.0.1", 0))
        rrq = codec.encode_request(codec.OP_RRQ, "dir/sub.bin")
        await loop.sock_sendto(first, rrq, ("127.0.0.1", served.port))
        _, peer_a = await asyncio.wait_for(loop.sock_recvfrom(first, 2048), 2)
        first.connect(peer_a)
        await loop.sock_sendall(first, codec.encode_ack(1))  # first transfer under way
        await asyncio.sleep(0.05)
        second.bind(first.getsockname())
        await loop.sock_sendto(second, rrq, ("127.0.0.1", served.port))
        data_b, peer_b = await asyncio.wait_for(loop.sock_recvfrom(second, 2048), 2)
        assert peer_b != peer_a and decode(data_b) == Data(1, want[:512])
        for sock, peer in ((first, peer_a), (second, peer_b)):
            if sock is second:
                sock.connect(peer)
                await loop.sock_sendall(sock, codec.encode_ack(1))
            for block in (2, 3):
                packet = decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 2))
                assert isinstance(packet, Data) and packet.block == block
                await loop.sock_sendall(sock, codec.encode_ack(block))
        records = await served.wait_records(2)
        assert [r.outcome for r in records] == ["complete", "complete"]
        assert records[0].client_port == records[1].client_port
    finally:
        first.close()
        second.close()


async def test_duplicate_ack_does_not_resend(served: Served) -> None:
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "ipxe.efi"), ("127.0.0.1", served.port))
        _, peer = await client.recv_packet()
        client.send(codec.encode_ack(1), peer)
        second, _ = await client.recv_packet()
        assert isinstance(second, Data) and second.block == 2
        client.send(codec.encode_ack(1), peer)  # duplicate: no Sorcerer's Apprentice
        with pytest.raises(TimeoutError):
            await client.recv(0.1)
        client.send(codec.encode_error(0, "bye"), peer)
        await served.wait_records(1)
        assert served.server.stats.duplicate_acks == 1
    finally:
        client.close()


async def test_repeated_ack_after_a_pause_resends_at_once() -> None:
    """A client that timed out repeats its ACK: answer it now, not at our 2 s timeout."""
    records = Records()
    server = TftpServer(lambda p: b"q" * 2000, host="127.0.0.1", port=0, timeout=2.0,
                        on_transfer=records)
    await server.start()
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "f"), ("127.0.0.1", server.port))
        _, peer = await client.recv_packet()
        client.send(codec.encode_ack(1), peer)
        second, _ = await client.recv_packet()
        assert isinstance(second, Data) and second.block == 2
        await asyncio.sleep(0.3)  # "lost" block 2: ask again
        client.send(codec.encode_ack(1), peer)
        again, _ = await client.recv_packet(within=0.8)
        assert isinstance(again, Data) and again.block == 2
        client.send(codec.encode_error(0, "bye"), peer)
        (record,) = await records.wait(1)
        assert record.retransmits == 1
    finally:
        client.close()
        await server.stop()
    assert server.stats.duplicate_acks == 1


async def test_tsize_probe_then_abort_is_a_size_probe(served: Served) -> None:
    """EDK2 asks for tsize, reads the OACK, aborts, then downloads for real."""
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "ipxe.efi", "octet",
                                         {"tsize": "0", "blksize": "1468"}),
                    ("127.0.0.1", served.port))
        oack, peer = await client.recv_packet()
        assert isinstance(oack, OptionAck) and oack.options["tsize"] == "850528"
        client.send(codec.encode_error(ErrorCode.OPTION_REFUSED, "tsize only"), peer)
        (record,) = await served.wait_records(1)
        assert (record.ok, record.outcome, record.bytes_sent) == (True, "size_probe", 0)
        # The same request again from the same port is the real download: it is served.
        client.send(codec.encode_request(codec.OP_RRQ, "ipxe.efi", "octet",
                                         {"tsize": "0", "blksize": "1468"}),
                    ("127.0.0.1", served.port))
        oack, peer = await client.recv_packet()
        assert isinstance(oack, OptionAck)
    finally:
        client.close()


async def test_silent_client_times_out_with_bounded_retries(served: Served) -> None:
    fds = open_fds()
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "ipxe.efi"), ("127.0.0.1", served.port))
        seen = [await client.recv() for _ in range(3)]  # DATA 1 and its two retransmissions
        assert len({data for data, _ in seen}) == 1
        (record,) = await served.wait_records(1, within=5)
        assert (record.ok, record.outcome, record.retransmits) == (False, "timeout", 2)
        with pytest.raises(TimeoutError):
            await client.recv(0.3)  # and then nothing more
    finally:
        client.close()
    await asyncio.sleep(0.05)  # the client's transport closes on a later loop iteration
    assert served.server.active == 0
    assert open_fds() <= fds


async def test_vanished_client_ends_its_transfer(served: Served) -> None:
    fds = open_fds()
    client = await raw_client()
    client.send(codec.encode_request(codec.OP_RRQ, "ipxe.efi", "octet", {"blksize": "1456"}),
                ("127.0.0.1", served.port))
    _, peer = await client.recv_packet()
    client.send(codec.encode_ack(0), peer)
    for block in range(1, 4):
        packet, _ = await client.recv_packet()
        assert isinstance(packet, Data) and packet.block == block
        if block < 3:
            client.send(codec.encode_ack(block), peer)
    client.close()  # gone mid-transfer: the next retransmission meets a closed port
    (record,) = await served.wait_records(1, within=5)
    assert not record.ok and record.outcome in ("unreachable", "timeout")
    assert record.bytes_sent == 2 * 1456
    assert served.server.active == 0
    assert open_fds() <= fds


async def test_stop_ends_active_transfers_and_threads(tmp_path: Path) -> None:
    import threading

    records = Records()
    server = TftpServer(lambda p: b"y" * 100_000, host="127.0.0.1", port=0,
                        on_transfer=records, timeout=5)
    await server.start()
    assert any(t.name.startswith("tftp-") for t in threading.enumerate())
    client = await raw_client()
    try:
        client.send(codec.encode_request(codec.OP_RRQ, "f"), ("127.0.0.1", server.port))
        await client.recv()
        port = server.port
        await server.stop()
        assert [r.outcome for r in records] == ["stopped"]
        assert not any(t.name.startswith("tftp-") for t in threading.enumerate())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))  # the listening port is free again
    finally:
        client.close()
    await server.stop()  # idempotent


async def test_async_on_transfer_is_awaited() -> None:
    seen: list[str] = []
    called = asyncio.Event()

    async def record(rec: TransferRecord) -> None:
        called.set()
        await asyncio.sleep(0.05)
        seen.append(rec.outcome)

    def broken(rec: TransferRecord) -> None:
        raise RuntimeError("callback bug")

    server = TftpServer(lambda p: b"z", host="127.0.0.1", port=0, on_transfer=record)
    await server.start()
    try:
        got = await download(server.port, "f")
        assert got.content == b"z"
        await asyncio.wait_for(called.wait(), 5)  # the client is done before the server is
    finally:
        await server.stop()
    assert seen == ["complete"]  # stop() waited for the callback still sleeping
    server = TftpServer(lambda p: b"z", host="127.0.0.1", port=0, on_transfer=broken)
    await server.start()
    try:
        assert (await download(server.port, "f")).content == b"z"
        assert (await download(server.port, "g")).content == b"z"  # survives its callback
    finally:
        await server.stop()


async def test_file_changes_are_picked_up(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"old" * 300)
    server = TftpServer(lambda p: f if p == "f.bin" else None, host="127.0.0.1", port=0)
    await server.start()
    try:
        assert (await download(server.port, "f.bin")).content == b"old" * 300
        f.write_bytes(b"new!" * 500)
        assert (await download(server.port, "f.bin")).content == b"new!" * 500
        f.unlink()
        missing = await download(server.port, "f.bin")
        assert missing.error is not None and missing.error.code == ErrorCode.FILE_NOT_FOUND
        os.mkfifo(f)  # a FIFO where a file was must not hang the server
        fifo = await download(server.port, "f.bin")
        assert fifo.error is not None
    finally:
        await server.stop()


# --- the codec ----------------------------------------------------------------------------------

names = st.text(alphabet=string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=12)
texts = st.text(alphabet=st.characters(blacklist_characters="\x00",
                                       blacklist_categories=("Cs",)), max_size=40)
options = st.dictionaries(names, texts, max_size=5)
packets = st.one_of(
    st.builds(Request, st.sampled_from([codec.OP_RRQ, codec.OP_WRQ]), texts,
              st.sampled_from(["octet", "netascii", "mail"]), options),
    st.builds(Data, st.integers(0, 0xFFFF), st.binary(max_size=600)),
    st.builds(Ack, st.integers(0, 0xFFFF)),
    st.builds(Error, st.integers(0, 0xFFFF), texts),
    st.builds(OptionAck, options),
)


@given(packets)
def test_codec_round_trip(packet: codec.Packet) -> None:
    assert decode(encode(packet)) == packet


@given(st.binary(max_size=700))
def test_decode_never_raises(data: bytes) -> None:
    result = decode(data)
    assert isinstance(result, (Request, Data, Ack, Error, OptionAck, Invalid))
    if isinstance(result, Invalid):
        assert result.reason


@given(st.lists(st.sampled_from(["..", ".", "", "a", "b.efi", "\\", "C:", "/"]),
                max_size=6).map("/".join) | texts)
def test_check_filename_never_escapes(name: str) -> None:
    result = check_filename(name)
    if isinstance(result, Refusal):
        assert result.code in (ErrorCode.ACCESS_VIOLATION, ErrorCode.FILE_NOT_FOUND)
        return
    parts = result.split("/")
    assert ".." not in parts and "" not in parts and "." not in parts
    assert not result.startswith("/") and "\\" not in result


@given(st.dictionaries(st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "x"]),
                       st.text(alphabet=string.digits + "x -", max_size=7)),
       st.integers(0, 1 << 30), st.integers(8, 65464), st.integers(1, 64))
def test_negotiate_stays_in_bounds(opts: dict[str, str], size: int, max_blk: int,
                                   max_win: int) -> None:
    neg = negotiate(opts, file_size=size, max_blksize=max_blk, max_windowsize=max_win)
    assert 8 <= neg.blksize <= max(512, max_blk) and 1 <= neg.windowsize <= max_win
    assert set(neg.oack) <= set(opts) - {"x"}
    assert neg.oack.get("tsize", str(size)) == str(size)


def test_request_padding_and_case() -> None:
    raw = b"\x00\x01Boot.EFI\x00OCTET\x00BLKSIZE\x001456\x00\x00\x00\x00"
    assert decode(raw) == Request(1, "Boot.EFI", "octet", {"blksize": "1456"})
    assert decode(b"\x00\x04\x00\x07pad") == Ack(7)
    assert isinstance(decode(b"\x00\x06tsize\x00"), Invalid)


def test_data_header_packing() -> None:
    assert codec.encode_data(0x1234, b"ab") == struct.pack(">HH", 3, 0x1234) + b"ab"


def test_resolver_type_accepts_loaders_locate() -> None:
    from dragonfly.boot.loaders import Loaders
    from dragonfly.edge.tftp import Resolver

    resolver: Resolver = Loaders(None).locate
    assert callable(resolver)



# --- lab: the production binding (0.0.0.0:69, an interface) inside private namespaces ----------

_NETNS_SERVER = r"""
import asyncio, sys
from dragonfly.edge.tftp import TftpServer

async def main():
    try:
        await TftpServer(lambda p: None, host="0.0.0.0", port=0, interface="nosuch0").start()
        print("bad interface started", flush=True)
    except OSError as exc:
        print(f"bad interface errno {exc.errno}", flush=True)
    server = TftpServer(lambda p: b"hello", host="0.0.0.0", port=69, interface=sys.argv[1])
    await server.start()
    print(f"ready {server.port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()

asyncio.run(main())
"""

_NETNS_CLIENT = r"""
import json, socket, sys
from dragonfly.edge.tftp import codec

replies = {}
for dest in sys.argv[1:]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(codec.encode_request(codec.OP_RRQ, "f"), (dest, 69))
        data, peer = sock.recvfrom(2048)
        sock.sendto(codec.encode_ack(1), peer)
        replies[dest] = [peer[0], data[:2].hex()]
print(json.dumps(replies))
"""


@pytest.mark.lab
def test_lab_replies_come_from_the_address_the_client_asked(tmp_path: Path) -> None:
    """Bound to 0.0.0.0:69 on an interface with two addresses, each reply leaves from the
    address the request was sent to (IP_PKTINFO), as tftpd-hpa does: without that, the
    kernel would pick the primary address and the client would drop the reply."""
    import errno
    import json
    import subprocess
    import sys

    from tests.lab.harness import require_lab, run, unique_name

    require_lab("ip")
    server_ns, client_ns = unique_name("ts"), unique_name("tc")
    (tmp_path / "server.py").write_text(_NETNS_SERVER)
    (tmp_path / "client.py").write_text(_NETNS_CLIENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run("ip", "netns", "add", server_ns)
    run("ip", "netns", "add", client_ns)
    server: subprocess.Popen[str] | None = None
    try:
        run("ip", "link", "add", "dfltftp0", "netns", server_ns, "type", "veth", "peer",
            "name", "dfltftp1", "netns", client_ns)
        for ns, dev, addrs in ((server_ns, "dfltftp0", ("10.98.0.1/24", "10.98.0.2/24")),
                               (client_ns, "dfltftp1", ("10.98.0.10/24",))):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            for addr in addrs:
                run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, str(tmp_path / "server.py"),
             "dfltftp0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert server.stdout is not None
        bad = server.stdout.readline().split()
        ready = server.stdout.readline().split()
        assert ready == ["ready", "69"], ready
        assert bad[-1] == str(errno.ENODEV), bad
        done = subprocess.run(
            ["ip", "netns", "exec", client_ns, sys.executable, str(tmp_path / "client.py"),
             "10.98.0.1", "10.98.0.2"], capture_output=True, text=True, timeout=60, env=env,
            check=False)
        assert done.returncode == 0, done.stderr
        replies = json.loads(done.stdout)
    finally:
        if server is not None:
            try:
                server.communicate(timeout=10)  # closing stdin stops it
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        run("ip", "netns", "del", client_ns, check=False)
        run("ip", "netns", "del", server_ns, check=False)
    assert server.returncode == 0
    assert replies == {"10.98.0.1": ["10.98.0.1", "0003"], "10.98.0.2": ["10.98.0.2", "0003"]}
