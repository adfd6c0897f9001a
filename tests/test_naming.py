"""Machine names: PTR first, else a deterministic memorable name from the MAC."""

from __future__ import annotations

import random
import re

import pytest

from dragonfly.domain import naming

NAME = re.compile(r"^[a-z]+-[a-z]+-\d{2}$")


def test_word_lists_give_a_million_valid_names() -> None:
    assert len(set(naming.ADJECTIVES)) == len(naming.ADJECTIVES) == 100
    assert len(set(naming.NOUNS)) == len(naming.NOUNS) == 100
    for word in (*naming.ADJECTIVES, *naming.NOUNS):
        assert re.fullmatch(r"[a-z]{2,12}", word), word


def test_memorable_name_is_deterministic_and_format_independent() -> None:
    name = naming.memorable_name("52:54:00:12:34:56")
    assert NAME.match(name)
    assert naming.short_hostname(name) == name  # a valid hostname as is
    assert naming.memorable_name("52-54-00-12-34-56") == name
    assert naming.memorable_name("52:54:00:12:34:56".upper()) == name
    assert naming.memorable_name("52:54:00:12:34:57") != name


def test_memorable_names_spread_over_the_space() -> None:
    rng = random.Random(7)
    macs = {":".join(f"{rng.randrange(256):02x}" for _ in range(6)) for _ in range(3000)}
    names = {naming.memorable_name(m) for m in macs}
    # ~1M combinations: 3000 draws collide a handful of times at most.
    assert len(names) >= len(macs) - 15
    adjectives = {n.split("-")[0] for n in names}
    nouns = {n.split("-")[1] for n in names}
    assert len(adjectives) == 100 and len(nouns) == 100


@pytest.mark.parametrize("fqdn, short", [
    ("node1.example.com", "node1"),
    ("Node-7.Rack3.example.com.", "node-7"),
    ("db01", "db01"),
    ("under_score.example.com", None),
    ("-dash.example.com", None),
    ("dash-.example.com", None),
    ("a" * 64 + ".example.com", None),
    ("10.0.0.5", None),
    ("", None),
    ("caf\u00e9.example.com", None),
])
def test_short_hostname(fqdn: str, short: str | None) -> None:
    assert naming.short_hostname(fqdn) == short


async def test_reverse_name_uses_lookup_and_falls_back() -> None:
    calls: list[tuple[str, float]] = []

    async def ptr(ip: str, seconds: float) -> str | None:
        calls.append((ip, seconds))
        return {"10.0.0.5": "web3.dc1.example.net.", "10.0.0.6": "10.0.0.6",
                "10.0.0.7": "bad_name.example"}.get(ip)

    assert await naming.machine_name("10.0.0.5", "aa:bb:cc:dd:ee:ff", 0.5, ptr) == "web3"
    assert calls == [("10.0.0.5", 0.5)]
    fallback = naming.memorable_name("aa:bb:cc:dd:ee:ff")
    for ip in ("10.0.0.6", "10.0.0.7", "10.0.0.8"):  # echo of the address, invalid, none
        assert await naming.machine_name(ip, "aa:bb:cc:dd:ee:ff", 0.5, ptr) == fallback
    assert await naming.machine_name(None, "aa:bb:cc:dd:ee:ff", 0.5, ptr) == fallback
    assert len(calls) == 4  # no lookup without an address


async def test_system_lookup_reads_the_hosts_file_for_loopback() -> None:
    # 127.0.0.1 is answered from /etc/hosts: no packet leaves the machine.
    assert await naming.reverse_name("127.0.0.1") == "localhost"
    assert await naming.system_reverse_lookup("not-an-address", 1.0) is None
