"""Machine names: the reverse-DNS (PTR) name of its address when there is one, otherwise a
memorable name derived from its MAC ("brave-falcon-42").

The memorable name is deterministic (a MAC always gets the same name, on every server) and
drawn from 100 adjectives x 100 nouns x 100 numbers = one million combinations.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

ADJECTIVES = (
    "able", "agile", "amber", "ample", "ancient", "arctic", "azure", "bold", "brave", "breezy",
    "bright", "brisk", "calm", "candid", "clever", "cosmic", "crimson", "crisp", "curious",
    "dapper", "daring", "dusty", "eager", "early", "easy", "electric", "epic", "fancy", "fast",
    "fearless", "fluffy", "frosty", "gentle", "giant", "gleaming", "golden", "grand", "happy",
    "hardy", "hidden", "humble", "icy", "jolly", "keen", "kind", "lively", "lucky", "lunar",
    "merry", "mighty", "misty", "modest", "noble", "nimble", "polar", "proud", "quick", "quiet",
    "rapid", "ready", "regal", "rustic", "sandy", "scarlet", "serene", "sharp", "shiny", "silent",
    "silver", "sleek", "smooth", "snowy", "solar", "solid", "spry", "stable", "steady", "stellar",
    "stormy", "sturdy", "sunny", "swift", "tidy", "tranquil", "trusty", "valiant", "vast",
    "velvet", "vivid", "warm", "wild", "windy", "wise", "witty", "young", "zany", "zealous",
    "zen", "zesty", "radiant",
)

NOUNS = (
    "albatross", "antelope", "badger", "beaver", "bison", "bobcat", "buffalo", "camel",
    "canary", "caribou", "cheetah", "cobra", "condor", "cougar", "coyote", "crane", "cricket",
    "dingo", "dolphin", "dove", "dragon", "eagle", "egret", "elk", "falcon", "ferret", "finch",
    "flamingo", "fox", "gazelle", "gecko", "gibbon", "giraffe", "goose", "gopher", "grizzly",
    "hawk", "hedgehog", "heron", "hornet", "husky", "ibex", "iguana", "impala", "jackal",
    "jaguar", "kestrel", "koala", "lemur", "leopard", "lion", "llama", "lynx", "magpie",
    "marmot", "marten", "meerkat", "mink", "moose", "narwhal", "newt", "ocelot", "orca", "osprey",
    "otter", "owl", "panda", "panther", "parrot", "pelican", "penguin", "puffin", "puma",
    "quail", "rabbit", "raccoon", "raven", "reindeer", "robin", "salmon", "seal", "shark",
    "sparrow", "stork", "swallow", "swan", "tapir", "tiger", "toucan", "trout", "turtle",
    "viper", "vulture", "walrus", "weasel", "whale", "wolf", "wombat", "yak", "zebra",
)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

Lookup = Callable[[str, float], Awaitable[str | None]]


def memorable_name(mac: str) -> str:
    """adjective-noun-NN from the MAC; the same MAC always gives the same name."""
    digits = re.sub(r"[^0-9a-f]", "", mac.lower())
    value = int.from_bytes(hashlib.sha256(digits.encode()).digest()[:8], "big")
    adjective = ADJECTIVES[value % len(ADJECTIVES)]
    value //= len(ADJECTIVES)
    noun = NOUNS[value % len(NOUNS)]
    value //= len(NOUNS)
    return f"{adjective}-{noun}-{value % 100:02d}"


def short_hostname(fqdn: str) -> str | None:
    """The first label of a DNS name, lowercased, if it is a valid hostname (RFC 1123)."""
    label = fqdn.strip().rstrip(".").split(".", 1)[0].lower()
    if not _LABEL.match(label):
        return None
    if label.isdigit():
        return None  # the first label of an IP address echoed back, not a name
    return label


async def system_reverse_lookup(ip: str, seconds: float) -> str | None:
    """The PTR name of ``ip`` through the system resolver (getnameinfo in a worker thread)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
        (str(addr), 0) if addr.version == 4 else (str(addr), 0, 0, 0))
    loop = asyncio.get_running_loop()
    try:
        host, _port = await asyncio.wait_for(
            loop.getnameinfo(sockaddr, socket.NI_NAMEREQD), seconds)
    except (TimeoutError, OSError) as exc:
        log.debug("no PTR name for %s: %s", ip, exc)
        return None
    return host


async def reverse_name(ip: str | None, seconds: float = 1.0,
                       lookup: Lookup = system_reverse_lookup) -> str | None:
    """The short hostname from reverse DNS, or None when there is no usable PTR record."""
    if not ip:
        return None
    fqdn = await lookup(ip, seconds)
    if not fqdn or fqdn == ip:
        return None
    return short_hostname(fqdn)


async def machine_name(ip: str | None, mac: str, seconds: float = 1.0,
                       lookup: Lookup = system_reverse_lookup) -> str:
    """What a newly discovered machine is called."""
    return await reverse_name(ip, seconds, lookup) or memorable_name(mac)
