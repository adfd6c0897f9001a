"""The newc cpio writer and reader, checked against Debian's real cpio(1)."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dragonfly.agent import cpio

CPIO = shutil.which("cpio")


def sample_entries() -> list[cpio.Entry]:
    return [
        cpio.directory("bin"),
        cpio.regular("bin/busybox", b"\x7fELF" + bytes(range(256)) * 3, 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.directory("etc", 0o750),
        cpio.regular("etc/empty", b""),
        cpio.regular("etc/odd", b"abc"),  # 3 bytes: data padding matters
        cpio.regular("etc/name-of-odd-length.txt", b"hello\n", 0o600),
        cpio.char_device("dev/console", 5, 1),
        cpio.directory("tmp", 0o1777),
    ]


def require_cpio() -> str:
    if CPIO is None:
        pytest.fail("Debian's cpio is required for this test: apt-get install cpio")
    return CPIO


def test_round_trip_and_alignment() -> None:
    entries = sample_entries()
    data = cpio.pack(entries)
    assert len(data) % 4 == 0
    result = cpio.unpack(data)
    assert result.ok, result.invalid_reason
    assert result.end == len(data)
    assert [e.name for e in result.entries] == [e.name for e in entries]
    for want, got in zip(entries, result.entries, strict=True):
        assert got.mode == want.mode
        assert got.data == (b"" if want.is_dir or stat.S_ISCHR(want.mode) else want.data)
        assert (got.rdevmajor, got.rdevminor) == (want.rdevmajor, want.rdevminor)
    # Every header starts on a 4-byte boundary.
    pos = 0
    for _ in range(len(entries) + 1):
        assert pos % 4 == 0 and data[pos:pos + 6] == cpio.MAGIC
        namesize = int(data[pos + 94:pos + 102], 16)
        filesize = int(data[pos + 54:pos + 62], 16)
        name_end = pos + cpio.HEADER_LEN + namesize
        pos = name_end + (-(name_end - pos) % 4)
        pos += filesize + (-filesize % 4)
    assert pos == len(data)
    assert data.rstrip(b"\0").endswith(b"TRAILER!!!")


def test_deterministic_and_names_cleaned() -> None:
    assert cpio.pack(sample_entries()) == cpio.pack(sample_entries())
    data = cpio.pack([cpio.regular("/init", b"x"), cpio.regular("./a/b", b"y")])
    assert [e.name for e in cpio.unpack(data).entries] == ["init", "a/b"]
    with pytest.raises(ValueError):
        cpio.pack([cpio.Entry("x", stat.S_IFREG | 0o644, mtime=1 << 33)])


def test_with_parents_adds_missing_directories_once() -> None:
    entries = cpio.with_parents([cpio.regular("a/b/c", b"1"), cpio.regular("a/b/d", b"2"),
                                 cpio.directory("x", 0o700), cpio.regular("x/y", b"3")])
    names = [(e.name, e.is_dir) for e in entries]
    assert names == [("a", True), ("a/b", True), ("a/b/c", False), ("a/b/d", False),
                     ("x", True), ("x/y", False)]
    assert stat.S_IMODE(entries[4].mode) == 0o700


def test_real_cpio_lists_and_extracts_our_archive(tmp_path: Path) -> None:
    tool = require_cpio()
    archive = tmp_path / "a.cpio"
    archive.write_bytes(cpio.pack(sample_entries()))
    listing = subprocess.run([tool, "-it"], stdin=archive.open("rb"), capture_output=True,
                             check=True, text=True)
    assert listing.stdout.split() == [e.name for e in sample_entries()]
    verbose = subprocess.run([tool, "-itv"], stdin=archive.open("rb"), capture_output=True,
                             check=True, text=True).stdout
    assert "lrwxrwxrwx" in verbose and "bin/sh -> busybox" in verbose
    assert "crw-------" in verbose and "5,   1" in verbose
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run([tool, "-idv", "--no-absolute-filenames"],
                          stdin=archive.open("rb"), cwd=out, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "bin/busybox").read_bytes() == sample_entries()[1].data
    assert stat.S_IMODE((out / "bin/busybox").stat().st_mode) == 0o755
    assert str((out / "bin/sh").readlink()) == "busybox"
    assert (out / "etc/odd").read_bytes() == b"abc"
    assert (out / "etc/empty").read_bytes() == b""
    assert stat.S_IMODE((out / "etc/name-of-odd-length.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "etc").stat().st_mode) == 0o750
    console = (out / "dev/console").stat()
    assert stat.S_ISCHR(console.st_mode) and os.major(console.st_rdev) == 5
    assert (out / "tmp").stat().st_mode & stat.S_ISVTX


def test_reader_parses_real_cpio_output(tmp_path: Path) -> None:
    tool = require_cpio()
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"12345")
    (src / "link").symlink_to("d/f")
    names = "d\nd/f\nlink\n"
    made = subprocess.run([tool, "-o", "-H", "newc"], input=names.encode(), cwd=src,
                          capture_output=True, check=True)
    result = cpio.unpack(made.stdout)
    assert result.ok, result.invalid_reason
    by_name = result.by_name()
    assert by_name["d/f"].data == b"12345" and by_name["d/f"].is_file
    assert by_name["d"].is_dir
    assert by_name["link"].is_symlink and by_name["link"].target == "d/f"


def test_unpack_all_concatenation_later_wins() -> None:
    first = gzip.compress(cpio.pack([cpio.regular("init", b"stock"), cpio.regular("a", b"1")]))
    second = cpio.pack([cpio.regular("init", b"ours")])
    data = first + b"\0" * (-len(first) % 4) + second
    result = cpio.unpack_all(data)
    assert result.ok, result.invalid_reason
    assert result.by_name()["init"].data == b"ours"
    assert result.by_name()["a"].data == b"1"


@pytest.mark.parametrize("data, reason", [
    (b"", "truncated header"),
    (b"070701" + b"0" * 50, "truncated header"),
    (b"x" * 120, "bad magic"),
    (b"070701" + b"Z" * 104, "non-hex"),
])
def test_reader_reports_bad_input(data: bytes, reason: str) -> None:
    result = cpio.unpack(data)
    assert not result.ok and reason in result.invalid_reason


def test_reader_reports_truncated_data() -> None:
    data = cpio.pack([cpio.regular("f", b"x" * 100)])
    result = cpio.unpack(data[:150])
    assert "truncated data" in result.invalid_reason
    assert "gzip" in cpio.unpack_all(b"\x1f\x8bjunk").invalid_reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_reader_never_raises(data: bytes) -> None:
    cpio.unpack(data)
    cpio.unpack_all(data)
    cpio.unpack(cpio.MAGIC + data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(st.characters(min_codepoint=97, max_codepoint=122),
                                  min_size=1, max_size=12), st.binary(max_size=64)),
                max_size=8, unique_by=lambda t: t[0]))
def test_round_trip_property(files: list[tuple[str, bytes]]) -> None:
    entries = [cpio.regular(name, data) for name, data in files]
    result = cpio.unpack(cpio.pack(entries))
    assert result.ok
    assert [(e.name, e.data) for e in result.entries] == files
