"""Tiny synthetic ELF files for the tests: a header, PT_LOAD/PT_INTERP/PT_DYNAMIC and a string
table, nothing executable."""

from __future__ import annotations

import struct


def make_elf(needed: tuple[str, ...] = (), soname: str = "", interp: str = "",
             bits: int = 64, order: str = "<", machine: int = 62,
             dynamic: bool = True) -> bytes:
    vaddr = 0x400000
    strtab = b"\0"
    offsets: dict[str, int] = {}
    for name in (*needed, soname):
        if name and name not in offsets:
            offsets[name] = len(strtab)
            strtab += name.encode() + b"\0"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    ph_types = [1] + ([3] if interp else []) + ([2] if dynamic else [])
    phoff = ehsize
    body = phoff + phentsize * len(ph_types)
    interp_off = body
    interp_bytes = interp.encode() + b"\0" if interp else b""
    strtab_off = interp_off + len(interp_bytes)
    dyn_off = strtab_off + len(strtab)
    dyn_off += (-dyn_off) % 8
    entries = [(1, offsets[n]) for n in needed]
    if soname:
        entries.append((14, offsets[soname]))
    entries += [(5, vaddr + strtab_off), (10, len(strtab)), (0, 0)]
    dyn_fmt = order + ("qQ" if bits == 64 else "iI")
    dyn = b"".join(struct.pack(dyn_fmt, t, v) for t, v in entries) if dynamic else b""
    total = dyn_off + len(dyn)

    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if order == "<" else 2, 1]) + \
        b"\0" * 9
    if bits == 64:
        header = ident + struct.pack(order + "HHIQQQIHHHHHH", 3, machine, 1, 0, phoff, 0, 0,
                                     ehsize, phentsize, len(ph_types), 64, 0, 0)
    else:
        header = ident + struct.pack(order + "HHIIIIIHHHHHH", 3, machine, 1, 0, phoff, 0, 0,
                                     ehsize, phentsize, len(ph_types), 40, 0, 0)
    segments = {1: (0, total), 3: (interp_off, len(interp_bytes)), 2: (dyn_off, len(dyn))}
    phdrs = b""
    for p_type in ph_types:
        off, size = segments[p_type]
        if bits == 64:
            phdrs += struct.pack(order + "IIQQQQQQ", p_type, 4, off, vaddr + off, vaddr + off,
                                 size, size, 8)
        else:
            phdrs += struct.pack(order + "IIIIIIII", p_type, off, vaddr + off, vaddr + off,
                                 size, size, 4, 4)
    data = header + phdrs + interp_bytes + strtab
    data += b"\0" * (dyn_off - len(data)) + dyn
    assert len(data) == total
    return data
