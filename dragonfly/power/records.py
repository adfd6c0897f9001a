"""BMC records: how to reach each machine's BMC. One document of kind ``bmc`` per machine
(never streamed: the kind is not in the event stream's STREAM_KINDS), the password encrypted
with a key file in the state directory (Fernet; created 0600 on first use). The password is
write-only: ``public`` never shows it, only ``has_password``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dragonfly.errors import InvalidInput
from dragonfly.power.magic import secureon_bytes

if TYPE_CHECKING:
    # Imported where a key is first needed: cryptography's import (~15 ms) is the largest
    # part of the power service's start, and the demo never seals a password at start.
    from cryptography.fernet import Fernet

BMC = "bmc"
KEY_FILE = "bmc.key"
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$", re.I)
_HOST = re.compile(r"^[A-Za-z0-9._:\-\[\]]+$")


@dataclass(frozen=True)
class BmcRecord:
    machine: str
    driver: str
    address: str = ""
    port: int = 0  # 0: the driver's default (623 for IPMI; the URL's for HTTP drivers)
    user: str = ""
    password: str = field(default="", repr=False)  # plain text, only in memory
    # Redfish
    system: str = ""  # e.g. /redfish/v1/Systems/1; empty: the only system the BMC has
    ca_pem: str = ""  # a CA bundle (PEM) for this BMC's certificate
    insecure: bool = False  # skip TLS verification (explicit)
    # Wake-on-LAN
    mac: str = ""
    broadcast: str = ""  # empty: the boot interface's directed broadcast
    # OpenJBOD
    enclosure: str = ""
    updated: float = 0.0

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the password."""
        out = {k: v for k, v in self.to_dict().items() if k != "password"}
        out["has_password"] = bool(self.password)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "driver": self.driver, "address": self.address,
                "port": self.port, "user": self.user, "password": self.password,
                "system": self.system, "ca_pem": self.ca_pem, "insecure": self.insecure,
                "mac": self.mac, "broadcast": self.broadcast, "enclosure": self.enclosure,
                "updated": self.updated}


class SecretBox:
    """Encrypts BMC passwords at rest. The key lives in ``<state dir>/bmc.key`` (0600,
    created on first use); without a state directory (the demo) it lives in memory only."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / KEY_FILE if state_dir is not None else None
        self._fernet: Fernet | None = None

    def load(self) -> None:
        """Read (or create) the key file: blocking file I/O, for a thread at start. Without a
        state directory there is no file: the key is made when first needed."""
        if self.path is not None:
            self._key()

    def _key(self) -> Fernet:
        if self._fernet is None:
            from cryptography.fernet import Fernet

            self._fernet = Fernet(self._load_or_create())
        return self._fernet

    def _load_or_create(self) -> bytes:
        from cryptography.fernet import Fernet

        if self.path is None:
            return Fernet.generate_key()
        try:
            return self.path.read_bytes().strip()
        except FileNotFoundError:
            pass
        key = Fernet.generate_key()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: use its key
            return self.path.read_bytes().strip()
        with os.fdopen(fd, "wb") as out:
            out.write(key + b"\n")
        return key

    def seal(self, secret: str) -> str:
        return self._key().encrypt(secret.encode()).decode() if secret else ""

    def open(self, token: str) -> str:
        if not token:
            return ""
        from cryptography.fernet import InvalidToken

        try:
            return self._key().decrypt(token.encode()).decode()
        except InvalidToken:
            raise InvalidInput("the stored BMC password cannot be decrypted with this "
                               f"server's key ({self.path}): set the password again") from None


def to_document(record: BmcRecord, box: SecretBox) -> dict[str, Any]:
    data = record.to_dict()
    data["password"] = box.seal(record.password)
    return data


def from_document(data: dict[str, Any], box: SecretBox) -> BmcRecord:
    known = {k: data[k] for k in BmcRecord.__dataclass_fields__ if k in data}
    known["password"] = ""
    record = BmcRecord(**known)
    with contextlib.suppress(InvalidInput):
        record = replace(record, password=box.open(str(data.get("password", ""))))
    return record


def parse_record(machine: str, body: dict[str, Any], drivers: frozenset[str],
                 previous: BmcRecord | None, now: float) -> BmcRecord:
    """A record from an API body. The password stays as it was when the body has none (it is
    write-only: clients never see it to send it back); ``"password": ""`` clears it."""
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object")
    allowed = set(BmcRecord.__dataclass_fields__) - {"machine", "updated"}
    unknown = sorted(set(body) - allowed - {"has_password"})
    if unknown:
        raise InvalidInput(f"unknown BMC fields: {', '.join(unknown)}")
    driver = body.get("driver", previous.driver if previous else "")
    if driver not in drivers:
        raise InvalidInput(f"driver must be one of {', '.join(sorted(drivers))}",
                           {"field": "driver"})

    def text(name: str, limit: int = 255) -> str:
        value = body.get(name, getattr(previous, name) if previous else "")
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidInput(f"{name} must be a string of at most {limit} characters",
                               {"field": name})
        return value.strip() if name != "password" else value

    address, user, password = text("address"), text("user", 64), text("password", 255)
    system, ca_pem = text("system"), text("ca_pem", 64 << 10)
    mac, broadcast, enclosure = text("mac", 17).lower(), text("broadcast"), text("enclosure")
    port = body.get("port", previous.port if previous else 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InvalidInput("port must be 0 (the default) to 65535", {"field": "port"})
    insecure = body.get("insecure", previous.insecure if previous else False)
    if not isinstance(insecure, bool):
        raise InvalidInput("insecure must be true or false", {"field": "insecure"})
    if driver == "wol":
        if not _MAC.match(mac):
            raise InvalidInput("Wake-on-LAN needs the machine's MAC (aa:bb:cc:dd:ee:ff)",
                               {"field": "mac"})
        if broadcast:
            try:
                ipaddress.IPv4Address(broadcast)
            except ValueError:
                raise InvalidInput("broadcast must be an IPv4 address",
                                   {"field": "broadcast"}) from None
        if password:
            secureon_bytes(password)  # raises InvalidInput when malformed
    elif driver != "fake":
        if not address:
            raise InvalidInput(f"the {driver} driver needs the BMC's address",
                               {"field": "address"})
        host = re.sub(r"^https?://", "", address).split("/", 1)[0]
        if not _HOST.match(host):
            raise InvalidInput("address must be a host name, an IP address or a URL",
                               {"field": "address"})
    if system and not system.startswith("/redfish/v1/"):
        raise InvalidInput("system must be a Redfish path such as /redfish/v1/Systems/1",
                           {"field": "system"})
    if ca_pem:
        try:
            ssl.create_default_context(cadata=ca_pem)
        except (ssl.SSLError, ValueError):
            raise InvalidInput("ca_pem is not a PEM certificate bundle",
                               {"field": "ca_pem"}) from None
    return BmcRecord(machine=machine, driver=driver, address=address, port=port, user=user,
                     password=password, system=system, ca_pem=ca_pem, insecure=insecure,
                     mac=mac, broadcast=broadcast, enclosure=enclosure, updated=now)
