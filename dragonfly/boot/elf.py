"""Just enough of ELF to bundle a dynamically linked program with its libraries: the program
interpreter (PT_INTERP), the shared libraries it needs (DT_NEEDED) and its own name (DT_SONAME).

Pure Python (no readelf/objdump), so the discovery image builder works from the zipapp on any
host. Reads 32- and 64-bit, little- and big-endian files; raises ``ElfError`` on anything that
is not a well-formed ELF file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME = 0, 1, 5, 10, 14
EM_X86_64 = 62


class ElfError(ValueError):
    pass


@dataclass(frozen=True)
class ElfInfo:
    machine: int  # e_machine: 62 for x86-64
    bits: int  # 32 or 64
    interpreter: str  # "" for shared libraries and static programs
    needed: tuple[str, ...]
    soname: str


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def read_elf(data: bytes) -> ElfInfo:
    if not is_elf(data) or len(data) < 52:
        raise ElfError("not an ELF file")
    bits = {1: 32, 2: 64}.get(data[4])
    order = {1: "<", 2: ">"}.get(data[5])
    if bits is None or order is None:
        raise ElfError("unknown ELF class or byte order")
    try:
        return _read(data, bits, order)
    except struct.error:
        raise ElfError("truncated ELF file") from None


def _read(data: bytes, bits: int, order: str) -> ElfInfo:
    if bits == 64:
        machine, = struct.unpack_from(order + "H", data, 18)
        phoff, = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
        # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        ph_fmt, dyn_fmt = order + "IIQQQQQQ", order + "qQ"
    else:
        machine, = struct.unpack_from(order + "H", data, 18)
        phoff, = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)
        # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
        ph_fmt, dyn_fmt = order + "IIIIIIII", order + "iI"
    if phentsize < struct.calcsize(ph_fmt) and phnum:
        raise ElfError("program headers too small")

    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    interp = ""
    dynamic: tuple[int, int] | None = None  # (offset, size)
    for i in range(phnum):
        fields = struct.unpack_from(ph_fmt, data, phoff + i * phentsize)
        if bits == 64:
            p_type, _, offset, vaddr, _, filesz, _, _ = fields
        else:
            p_type, offset, vaddr, _, filesz, _, _, _ = fields
        if offset + filesz > len(data):
            raise ElfError("a segment lies beyond the end of the file")
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_INTERP:
            interp = data[offset:offset + filesz].split(b"\0", 1)[0].decode("utf-8", "replace")
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        return ElfInfo(machine, bits, interp, (), "")

    entries: list[tuple[int, int]] = []
    step = struct.calcsize(dyn_fmt)
    offset, size = dynamic
    for pos in range(offset, offset + size - step + 1, step):
        tag, value = struct.unpack_from(dyn_fmt, data, pos)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab_addr = next((v for t, v in entries if t == DT_STRTAB), None)
    strsz = next((v for t, v in entries if t == DT_STRSZ), 0)
    if strtab_addr is None:
        raise ElfError("dynamic section without a string table")
    # DT_STRTAB is a virtual address: find the file offset through the loadable segments.
    strtab = next((strtab_addr - vaddr + off for vaddr, off, filesz in loads
                   if vaddr <= strtab_addr < vaddr + filesz), None)
    if strtab is None:
        raise ElfError("the string table is in no loadable segment")
    table = data[strtab:strtab + strsz] if strsz else data[strtab:]

    def string(index: int) -> str:
        if index >= len(table):
            raise ElfError("a dynamic entry points beyond the string table")
        return table[index:].split(b"\0", 1)[0].decode("utf-8", "replace")

    needed = tuple(string(v) for t, v in entries if t == DT_NEEDED)
    soname = next((string(v) for t, v in entries if t == DT_SONAME), "")
    return ElfInfo(machine, bits, interp, needed, soname)
