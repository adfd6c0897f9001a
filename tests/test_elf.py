"""dragonfly.boot.elf: interpreter, NEEDED and SONAME from ELF files, without readelf."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dragonfly.boot.elf import ElfError, is_elf, read_elf
from tests.elf_fixtures import make_elf


@pytest.mark.parametrize("bits, order", [(64, "<"), (32, "<"), (64, ">"), (32, ">")])
def test_synthetic_program_and_library(bits: int, order: str) -> None:
    program = read_elf(make_elf(("libfoo.so.1", "libc.so.6"), interp="/lib64/ld.so.2",
                                bits=bits, order=order))
    assert program.interpreter == "/lib64/ld.so.2"
    assert program.needed == ("libfoo.so.1", "libc.so.6")
    assert program.soname == "" and program.bits == bits and program.machine == 62
    library = read_elf(make_elf(("libc.so.6",), soname="libfoo.so.1", bits=bits, order=order))
    assert library.interpreter == "" and library.soname == "libfoo.so.1"
    assert library.needed == ("libc.so.6",)


def test_static_program_has_nothing_to_load() -> None:
    info = read_elf(make_elf(dynamic=False))
    assert info.interpreter == "" and info.needed == () and info.soname == ""


@pytest.mark.parametrize("data, message", [
    (b"#!/bin/sh\necho hi\n", "not an ELF file"),
    (b"\x7fELF\x03\x01" + b"\0" * 60, "unknown ELF class"),
    (make_elf(("libc.so.6",))[:180], "beyond the end of the file"),  # past the headers
    (make_elf(("libc.so.6",))[:70], "truncated"),
])
def test_rejects_what_is_not_a_whole_elf_file(data: bytes, message: str) -> None:
    with pytest.raises(ElfError, match=message):
        read_elf(data)


def test_agrees_with_readelf_on_this_hosts_python() -> None:
    """The interpreter running the tests, and every library it needs, read both ways."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    path = Path(sys.executable).resolve()
    data = path.read_bytes()
    assert is_elf(data)
    info = read_elf(data)
    out = subprocess.run([readelf, "-d", "-l", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert list(info.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
    interp = re.search(r"Requesting program interpreter: (.+?)\]", out)
    assert info.interpreter == (interp.group(1) if interp else "")
