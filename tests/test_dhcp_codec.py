"""The DHCP codec: real captured packets, typed option helpers, RFC 3396 and overload, and
hypothesis fuzzing (random bytes never raise; valid packets round-trip)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dragonfly.edge.dhcp import options as o
from dragonfly.edge.dhcp.codec import (
    BOOTREPLY,
    BOOTREQUEST,
    MAGIC_COOKIE,
    MessageType,
    Packet,
    decode,
    encode,
    encode_options,
)
from tests.lab_dhcp.captured import CAPTURED, packet


def _header(op: int = 1, hlen: int = 6, chaddr: bytes = b"\x52\x54\x00\x12\x34\x56") -> bytes:
    return struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, hlen, 0, 0x1234, 0, 0,
                       bytes(4), bytes(4), bytes(4), bytes(4), chaddr.ljust(16, b"\0"),
                       bytes(64), bytes(128))


# --- real clients ------------------------------------------------------------------------------

def test_seabios_ipxe_rom_discover_decodes_with_all_helpers() -> None:
    p = decode(packet("qemu_seabios_ipxe_rom_discover")).packet
    assert p is not None
    assert p.op == BOOTREQUEST and p.mac == "52:54:00:12:34:56"
    assert p.message_type == MessageType.DISCOVER and p.xid == 0x6F6A8339
    assert o.vendor_class(p) == "PXEClient:Arch:00000:UNDI:002001"
    assert o.user_classes(p) == ("iPXE",)  # iPXE's plain, non-RFC 3004 user class
    assert o.client_arches(p) == (0,)
    assert o.client_nii(p) == (1, 2, 1)
    assert o.max_message_size(p) == 1472
    assert o.client_uuid(p) == "00000000-0000-0000-0000-000000000000"
    assert o.client_id(p) == b"\x01" + bytes.fromhex("525400123456")
    assert "http" in o.ipxe_features(p) and "bzimage" in o.ipxe_features(p)
    assert o.server_id(p) is None


def test_edk2_discover_has_arch_7_and_no_user_class() -> None:
    p = decode(packet("ovmf_edk2_discover")).packet
    assert p is not None
    assert p.flags & 0x8000  # EDK2 asks for broadcast replies
    assert o.client_arches(p) == (7,)
    assert o.arch_from_vendor_class(o.vendor_class(p)) == 7
    assert o.user_classes(p) == ()
    assert o.ipxe_options(p) is None


def test_snponly_request_names_the_site_server() -> None:
    p = decode(packet("ovmf_snponly_ipxe_request")).packet
    assert p is not None
    assert p.message_type == MessageType.REQUEST
    assert o.server_id(p) == "10.99.0.2"
    assert o.requested_ip(p) == "10.99.0.112"
    assert "efi" in o.ipxe_features(p)


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_packets_round_trip(name: str) -> None:
    first = decode(packet(name)).packet
    assert first is not None
    again = decode(encode(first)).packet
    assert again == first


# --- building and options ----------------------------------------------------------------------

def test_reply_with_pxe_options_encodes_to_the_expected_wire_form() -> None:
    reply = Packet(BOOTREPLY, 0xDEADBEEF, bytes.fromhex("525400123456"), flags=0x8000,
                   siaddr="10.0.0.1", file=b"undionly.kpxe",
                   options={53: bytes((MessageType.OFFER,)), 54: o.build_ip("10.0.0.1"),
                            60: b"PXEClient", 43: o.build_pxe_vendor()})
    data = encode(reply)
    assert len(data) == 300  # padded to the BOOTP minimum
    assert data[:4] == b"\x02\x01\x06\x00" and data[4:8] == b"\xde\xad\xbe\xef"
    assert data[20:24] == bytes((10, 0, 0, 1))  # siaddr
    assert data[108:121] == b"undionly.kpxe"
    assert data[236:240] == MAGIC_COOKIE
    assert data[240:] .startswith(b"\x35\x01\x02\x36\x04\x0a\x00\x00\x01\x3c\x09PXEClient"
                                  b"\x2b\x04\x06\x01\x08\xff\xff")
    back = decode(data).packet
    assert back is not None and back.boot_file == "undionly.kpxe"
    assert o.pxe_options(back) == {6: b"\x08"}


def test_user_class_rfc3004_and_plain() -> None:
    p = Packet(1, 1, options={77: o.build_user_class(["iPXE", "rack-7"])})
    assert o.user_classes(p) == ("iPXE", "rack-7")
    p.options[77] = o.build_user_class(["iPXE"], rfc3004=False)
    assert p.options[77] == b"iPXE"
    assert o.user_classes(p) == ("iPXE",)
    p.options[77] = b"\x09short"  # claims more than it has: taken as one plain string
    assert o.user_classes(p) == ("\tshort",)


def test_typed_helpers_reject_malformed_values() -> None:
    p = Packet(1, 1, options={54: b"\x01\x02\x03", 93: b"\x00", 94: b"\x01", 97: b"\x01" * 17,
                              57: b"\x05", 175: b"\x13\x05\x01", 53: b"\x01"})
    assert o.server_id(p) is None
    assert o.client_arches(p) == ()
    assert o.client_nii(p) is None
    assert o.client_uuid(p) is None  # type byte must be 0
    assert o.max_message_size(p) is None
    assert o.ipxe_options(p) is None and o.ipxe_features(p) == frozenset()


def test_uuid_byte_orders() -> None:
    raw = bytes(range(16))
    p = Packet(1, 1, options={97: b"\x00" + raw})
    assert o.client_uuid(p) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert o.uuid_swapped("00010203-0405-0607-0809-0a0b0c0d0e0f") == \
        "03020100-0504-0706-0809-0a0b0c0d0e0f"


def test_relay_agent_and_encapsulated_options() -> None:
    value = o.build_tlv({1: b"eth0/1", 2: b"switch-a"}, end=False)
    p = Packet(1, 1, options={82: value})
    assert o.relay_agent(p) == {1: b"eth0/1", 2: b"switch-a"}
    assert o.parse_tlv(b"\x01\x05ab") is None  # truncated sub-option
    assert o.parse_tlv(b"\x00\x01\x01a\xff\x02\x01b") == {1: b"a"}  # pad skipped, end stops


def test_long_option_is_split_and_reassembled_per_rfc3396() -> None:
    long_value = bytes(range(256)) * 2  # 512 bytes: needs three instances
    data = encode(Packet(1, 7, options={53: b"\x01", 224: long_value}))
    at = 240 + 3  # after the message type option
    assert data[at] == 224 and data[at + 1] == 255
    assert data[at + 257] == 224 and data[at + 258] == 255
    assert data[at + 514] == 224 and data[at + 515] == 2
    p = decode(data).packet
    assert p is not None and p.options[224] == long_value


def test_overload_spills_into_file_and_sname_and_back() -> None:
    opts = {53: b"\x05", 224: b"a" * 200, 225: b"b" * 150, 226: b"c" * 100, 227: b"d" * 30}
    data = encode(Packet(2, 9, options=opts), max_size=576)
    assert len(data) <= 576
    overload_at = data.index(b"\x34\x01", 240)
    assert data[overload_at + 2] == 3  # both file and sname used
    back = decode(data).packet
    assert back is not None
    assert back.options == opts
    assert back.file == b"" and back.sname == b""


def test_pre_encoded_prefix_equals_plain_options() -> None:
    static = {53: b"\x02", 54: o.build_ip("10.0.0.1"), 60: b"PXEClient"}
    blob = encode_options(static)
    assert blob == b"\x35\x01\x02\x36\x04\x0a\x00\x00\x01\x3c\x09PXEClient"
    p = Packet(2, 3, options={97: b"\x00" + bytes(16)})
    with_prefix = encode(p, prefix=blob)
    plain = encode(Packet(2, 3, options={**static, 97: b"\x00" + bytes(16)}))
    assert with_prefix == plain
    # When the prefix plus the options need overload, the general path still applies.
    big = Packet(2, 3, options={224: b"x" * 200, 225: b"y" * 250})
    back = decode(encode(big, prefix=blob, max_size=576)).packet
    assert back is not None and back.options == {**static, **big.options}


def test_overload_refuses_when_nothing_fits() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        encode(Packet(2, 9, file=b"x", sname=b"y", options={224: b"z" * 1000}), max_size=576)


def test_decode_honours_overload_written_by_another_server() -> None:
    # Options in the file field (overload 1): bootfile name 67 lives there.
    file_field = (b"\x43\x0bpxelinux.0\x00\xff").ljust(128, b"\0")
    data = bytearray(_header(op=2))
    data[108:236] = file_field
    data += MAGIC_COOKIE + b"\x35\x01\x02\x34\x01\x01\xff"
    p = decode(bytes(data)).packet
    assert p is not None
    assert p.options[67] == b"pxelinux.0\x00"
    assert o.text(p.options[67]) == "pxelinux.0"
    assert p.file == b"" and 52 not in p.options


def test_pad_and_missing_end_are_tolerated() -> None:
    data = _header() + MAGIC_COOKIE + b"\x00\x00\x35\x01\x01\x00\x3c\x03abc"
    p = decode(data).packet
    assert p is not None and p.message_type == 1 and p.options[60] == b"abc"


def test_plain_bootp_without_cookie() -> None:
    p = decode(_header() + bytes(64)).packet
    assert p is not None and not p.dhcp and p.options == {} and p.message_type is None
    assert decode(encode(p)).packet == p


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "too short"),
    (_header()[:200], "too short"),
    (_header(op=3) + MAGIC_COOKIE, "op 3"),
    (_header(hlen=17) + MAGIC_COOKIE, "hardware address length 17"),
    (_header() + b"\x01\x02\x03\x04", "bad magic cookie"),
    (_header() + MAGIC_COOKIE + b"\x35", "no length byte"),
    (_header() + MAGIC_COOKIE + b"\x3c\x10abc", "claims 16 bytes"),
    (_header() + MAGIC_COOKIE + b"\x34\x01\x07\xff", "overload"),
    (_header() + MAGIC_COOKIE + b"\x35\x02\x01\x01\xff", "message type option has length 2"),
])
def test_invalid_packets_give_a_reason(data: bytes, reason: str) -> None:
    result = decode(data)
    assert result.packet is None and not result.ok
    assert reason in result.invalid_reason


def test_encode_rejects_unrepresentable_packets() -> None:
    with pytest.raises(ValueError):
        encode(Packet(1, 1, ciaddr="not-an-ip"))
    with pytest.raises(ValueError):
        encode(Packet(1, 1, hops=300))


# --- fuzzing -----------------------------------------------------------------------------------

@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=700))
def test_random_bytes_never_raise(data: bytes) -> None:
    result = decode(data)
    assert (result.packet is None) == bool(result.invalid_reason)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from([1, 2]), st.integers(0, 20))
def test_random_options_after_a_valid_header_never_raise(tail: bytes, op: int, hlen: int
                                                         ) -> None:
    result = decode(_header(op=op, hlen=hlen) + MAGIC_COOKIE + tail)
    if result.packet is not None:
        p = result.packet
        # The typed readers must not raise on whatever came out either.
        o.vendor_class(p), o.user_classes(p), o.client_arches(p), o.client_nii(p)
        o.client_uuid(p), o.ipxe_features(p), o.pxe_options(p), o.relay_agent(p)
        o.server_id(p), o.requested_ip(p), o.max_message_size(p)
        assert decode(encode(p)).packet == p


def _with_type(p: Packet) -> Packet:
    if p.xid % 3:  # most packets carry a message type, some are BOOTP-style
        p.options = {53: bytes((p.xid % 8 + 1,)), **p.options}
    return p


_ip = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
# 52 (overload) is the codec's own business; 53 must be one byte to be valid at all.
_codes = st.integers(1, 254).filter(lambda c: c not in (52, 53))
packets = st.builds(
    Packet,
    op=st.sampled_from([1, 2]), xid=st.integers(0, 2**32 - 1),
    chaddr=st.binary(min_size=16, max_size=16), htype=st.integers(0, 255),
    hlen=st.integers(0, 16), hops=st.integers(0, 255), secs=st.integers(0, 65535),
    flags=st.integers(0, 65535), ciaddr=_ip, yiaddr=_ip, siaddr=_ip, giaddr=_ip,
    sname=st.binary(max_size=64), file=st.binary(max_size=128),
    options=st.dictionaries(_codes, st.binary(max_size=600), max_size=12),
).map(_with_type)



@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(packets)
def test_valid_packets_round_trip(p: Packet) -> None:
    assert decode(encode(p)).packet == p


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_codes, st.binary(max_size=300), max_size=6))
def test_packets_round_trip_through_overload(opts: dict[int, bytes]) -> None:
    p = Packet(2, 1, options=opts)
    try:
        data = encode(p, max_size=576)
    except ValueError:
        return  # more than 576 bytes can carry: refusing is the right answer
    assert len(data) <= 576
    assert decode(data).packet == p
