"""Every setting, declared once.

The ``SETTINGS`` table drives the TOML file that ``install`` writes (every setting present and
commented), the ``DRAGONFLY_*`` environment overrides, CLI validation, and the docs page. A test
fails when a setting lacks help text.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dragonfly.dnsid.rules import parse_rules
from dragonfly.errors import InvalidInput

DEFAULT_CONFIG_PATH = Path("/etc/dragonfly/dragonfly.toml")
MODES = ("native", "simple", "tinkerbell", "distributed")
# Accepted so that a config written today keeps working when these modes arrive; until then
# install and serve say so and machines are provisioned as in native mode.
UNBUILT_MODES = ("distributed",)
DHCP_MODES = ("off", "selective", "auto", "full")


@dataclass(frozen=True)
class Setting:
    section: str
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    # A credential: ``shown`` masks it wherever settings are displayed (the settings API, the
    # CLI, a Config's repr); only the config file and the environment hold its value.
    secret: bool = False

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"DRAGONFLY_{self.section}_{self.name}".upper()

    def coerce(self, value: Any, source: str) -> Any:
        """Turn a TOML or environment value into this setting's type, or explain why not."""
        where = f"{self.key} (from {source})"
        try:
            if self.type is bool:
                if isinstance(value, bool):
                    result: Any = value
                elif isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                    result = True
                elif isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                    result = False
                else:
                    raise ValueError(value)
            elif self.type is int:
                if isinstance(value, bool):
                    raise ValueError(value)
                result = int(value)
            elif self.type is list:
                if isinstance(value, str):
                    result = [v.strip() for v in value.split(",") if v.strip()]
                elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                    result = list(value)
                else:
                    raise ValueError(value)
            else:
                if not isinstance(value, str):
                    raise ValueError(value)
                result = value
        except ValueError:
            raise InvalidInput(
                f"{where}: expected {self.type.__name__}, got {value!r}") from None
        if self.choices and result not in self.choices:
            raise InvalidInput(f"{where}: {result!r} is not one of {', '.join(self.choices)}")
        return result

    def shown(self, value: Any) -> Any:
        """``value`` as it may be displayed: a secret only says whether it is set."""
        if not self.secret:
            return value
        return SECRET_MASK if value else ""


SECRET_MASK = "(set)"


SETTINGS: tuple[Setting, ...] = (
    Setting("server", "mode", str, "native",
            "How machines are installed: native (Dragonfly's agent), simple (agentless "
            "kickstart/preseed/autoinstall), tinkerbell (drives Tinkerbell on k3s), "
            "distributed (several Dragonfly nodes).", MODES),
    Setting("server", "bind", str, "0.0.0.0", "Address the web panel and API listen on."),
    Setting("server", "port", int, 3000, "TCP port of the web panel, API and boot HTTP."),
    Setting("server", "state_dir", str, "/var/lib/dragonfly",
            "Where the database, loaders, discovery images and caches live."),
    Setting("server", "public_url", str, "",
            "URL machines and browsers use to reach this server, e.g. http://10.0.0.5:3000. "
            "Empty: derived from the boot interface's address and the port."),
    Setting("server", "log_level", str, "info",
            "How much the service logs to the journal (stderr).",
            ("debug", "info", "warning", "error")),
    Setting("boot", "interface", str, "",
            "Network interface facing the machines to provision (PXE, DHCP, TFTP). "
            "Empty: the interface of the default route."),
    Setting("boot", "dhcp_mode", str, "auto",
            "off: no DHCP; selective: answer only known machines allowed to PXE; auto: answer "
            "any PXE client beside the site's DHCP server (proxyDHCP); full: be the DHCP server "
            "of an isolated network.", DHCP_MODES),
    Setting("boot", "dhcp_range", str, "",
            "Full DHCP mode: the address pool, START-END, e.g. 10.99.0.100-10.99.0.200."),
    Setting("boot", "dhcp_reservations", list, [],
            "Full DHCP mode: fixed addresses as MAC=IP entries, e.g. "
            "[\"52:54:00:12:34:56=10.99.0.10\"]."),
    Setting("boot", "dhcp_netmask", str, "",
            "Full DHCP mode: the netmask handed out. Empty: the boot interface's."),
    Setting("boot", "dhcp_router", str, "",
            "Full DHCP mode: the default gateway handed out (option 3). Empty: none."),
    Setting("boot", "dhcp_dns", list, [],
            "Full DHCP mode: DNS servers handed out (option 6). Empty: none."),
    Setting("boot", "dhcp_lease_time", int, 3600,
            "Full DHCP mode: lease time in seconds (at least 60)."),
    Setting("boot", "dhcp_force", bool, False,
            "Full DHCP mode: start even when another DHCP server already answers on the "
            "segment (normally a refusal: two servers fight over every client)."),
    Setting("boot", "loader_uefi", str, "ipxe.efi",
            "Loader for x86-64 UEFI clients: ipxe.efi (iPXE's own drivers) or snponly.efi "
            "(the firmware's network driver; try it when a NIC misbehaves under ipxe.efi).",
            ("ipxe.efi", "snponly.efi")),
    Setting("boot", "ipxe_chainload", bool, True,
            "Chainload an iPXE that Dragonfly did not load itself (a NIC's iPXE ROM) into the "
            "bundled iPXE once, so every boot script runs under the same iPXE build."),
    Setting("boot", "tftp_server", str, "",
            "Next-server handed to PXE clients for TFTP. Empty: this server's boot address."),
    Setting("boot", "tftp_port", int, 69,
            "UDP port of the TFTP server (69 for PXE firmware; others only for tests)."),
    Setting("boot", "address", str, "",
            "The address machines use to reach this server (DHCP server id, TFTP, iPXE "
            "HTTP). Empty: the boot interface's IPv4 address."),
    Setting("boot", "default_os", str, "",
            "OS template deployed automatically to newly adopted machines. Empty: none."),
    Setting("boot", "allowed_networks", list, [],
            "CIDRs (IPv4 and IPv6) machines may boot and check in from: the iPXE script, "
            "discovery kernel and initrd, loaders over HTTP, agent check-ins and heartbeats "
            "(others get 403), TFTP (refused), and relayed DHCP (answered only for relays "
            "inside; DHCP on the local segment has no address to check). Empty: any "
            "address, as before this setting existed (the machines' networks, relayed "
            "ones included, are not known at install time); set it to the provisioning "
            "networks. The panel and API allowlist (security.allowlist) is separate."),
    Setting("agent", "poll_seconds", int, 30,
            "How long a discovery agent waiting for orders sleeps between heartbeats (its "
            "commands and deployments reach it at the next one)."),
    Setting("security", "front_page", str, "login",
            "Who may use the panel: open (read-only without login), login, admin (admins only).",
            ("open", "login", "admin")),
    Setting("security", "allowlist", list, [],
            "CIDRs (IPv4 and IPv6) allowed to reach the panel and API. Empty: everyone. "
            "Boot and agent endpoints are not affected (see boot.allowed_networks)."),
    Setting("security", "require_mfa", bool, False,
            "Every account must enroll TOTP two-factor authentication before it can use the "
            "panel (API tokens are not affected)."),
    Setting("security", "session_idle_minutes", int, 60,
            "A panel session ends after this many minutes without a request."),
    Setting("security", "session_max_hours", int, 12,
            "A panel session ends this many hours after sign-in, however active."),
    Setting("security", "login_max_failures", int, 5,
            "Failed sign-ins for one account before it is locked out for a while."),
    Setting("security", "login_max_failures_per_address", int, 20,
            "Failed sign-ins from one client address before that address is locked out."),
    Setting("security", "login_lockout_minutes", int, 15,
            "How long a lock-out after too many failed sign-ins lasts (failures older than "
            "this are forgotten)."),
    Setting("security", "token_default_days", int, 90,
            "Lifetime of a new API token when its creator gives none (0: never expires)."),
    Setting("security", "trusted_proxies", list, [],
            "CIDRs of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto headers are "
            "believed (for the allowlist, sign-in limits and Secure cookies). Empty: none."),
    Setting("tinkerbell", "kubeconfig", str, "/etc/dragonfly/kubeconfig",
            "Tinkerbell mode: kubeconfig for the Kubernetes cluster running Tinkerbell. "
            "`dragonfly install --mode tinkerbell` writes it for a service account limited to "
            "Tinkerbell's objects in the namespace below."),
    Setting("tinkerbell", "namespace", str, "tink-system",
            "Tinkerbell mode: namespace of the Tinkerbell stack, where Dragonfly creates "
            "Hardware, Template and Workflow objects."),
    Setting("tinkerbell", "power", str, "dragonfly",
            "Tinkerbell mode: who drives BMC power. dragonfly: Dragonfly's own drivers (IPMI, "
            "Redfish, Wake-on-LAN), as in every mode. rufio: Tinkerbell's BMC controller owns "
            "the BMCs: each IPMI or Redfish record becomes a Rufio Machine (its credentials "
            "in a Secret Dragonfly owns) and each power operation a Rufio Job; power state "
            "is read from the Machine. Wake-on-LAN and enclosure records keep Dragonfly's "
            "drivers (Rufio has none for them).",
            ("dragonfly", "rufio")),
    Setting("dns", "enabled", bool, True,
            "Look up the address every booting machine comes from in reverse DNS: a PTR name "
            "becomes its hostname, the name's TXT records (\"dragonfly:tags=a,b\", "
            "\"dragonfly:role=x\") its tags and role. In every mode."),
    Setting("dns", "servers", list, [],
            "DNS servers (IP addresses) for those look-ups. Empty: the system's "
            "(/etc/resolv.conf)."),
    Setting("dns", "timeout_ms", int, 1500,
            "The most a boot waits for DNS (PTR and TXT together), in milliseconds; on a "
            "timeout the machine boots with the identity it had."),
    Setting("dns", "cache_seconds", int, 300,
            "How long an answer is kept (failures: at most 30 s); 0 asks at every boot."),
    Setting("dns", "rules", list, [],
            "Hostname rules: a regular expression (no spaces), then role=NAME and tag=NAME "
            "words, e.g. \"^web-\\d+$ role=web tag=nginx\". Every matching rule adds its "
            "tags; the first role wins, after a role from TXT."),
    Setting("simple", "mirrors", list, [],
            "Simple mode: the site's repository per OS template or family, as SLUG=URL or "
            "FAMILY=URL (e.g. debian=http://mirror.example/debian, "
            "rocky-9=http://mirror.example/rocky/9/BaseOS/x86_64/os/). A deployment's "
            "mirror option wins; without either, the distribution's own."),
    Setting("metrics", "token", str, "",
            "Bearer token Prometheus must send to scrape /metrics (Authorization: Bearer "
            "<token>). Empty: /metrics is open to every address the panel's allowlist "
            "(security.allowlist) admits, without a login. Never shown by the panel, the API "
            "or the logs.", secret=True),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


class Config:
    """Resolved settings: defaults < TOML file < environment < explicit overrides (CLI flags)."""

    def __init__(self, values: Mapping[str, Any], path: Path | None = None) -> None:
        self._values = dict(values)
        self.path = path

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def shown(self) -> dict[str, Any]:
        """Every value as it may be displayed: secrets masked."""
        return {k: SETTINGS_BY_KEY[k].shown(v) if k in SETTINGS_BY_KEY else v
                for k, v in self._values.items()}

    def __repr__(self) -> str:
        return f"Config({self.shown()!r}, path={self.path!r})"

    @property
    def state_dir(self) -> Path:
        return Path(self["server.state_dir"])

    @classmethod
    def defaults(cls) -> Config:
        return cls({s.key: s.default for s in SETTINGS})

    @classmethod
    def load(cls, path: Path | None, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> Config:
        values = {s.key: s.default for s in SETTINGS}
        if path is not None:
            import tomllib  # a config file to read: not the demo's start

            try:
                with open(path, "rb") as fh:
                    doc = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise InvalidInput(f"{path}: not valid TOML: {exc}") from None
            for section, table in doc.items():
                if not isinstance(table, dict):
                    raise InvalidInput(f"{path}: [{section}] must be a table")
                for name, value in table.items():
                    setting = SETTINGS_BY_KEY.get(f"{section}.{name}")
                    if setting is None:
                        raise InvalidInput(f"{path}: unknown setting {section}.{name}")
                    values[setting.key] = setting.coerce(value, str(path))
        for setting in SETTINGS:
            raw = (env if env is not None else os.environ).get(setting.env)
            if raw is not None:
                values[setting.key] = setting.coerce(raw, setting.env)
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = SETTINGS_BY_KEY[key].coerce(value, "command line")
        _validate(values)
        return cls(values, path)


def _validate(values: Mapping[str, Any]) -> None:
    port = values["server.port"]
    if not 0 <= port <= 65535:
        raise InvalidInput(f"server.port: {port} is not a TCP port")
    for key in ("security.allowlist", "security.trusted_proxies", "boot.allowed_networks"):
        for cidr in values[key]:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise InvalidInput(f"{key}: {cidr!r} is not a CIDR") from None
    for key in ("security.session_idle_minutes", "security.session_max_hours",
                "security.login_max_failures", "security.login_max_failures_per_address",
                "security.login_lockout_minutes"):
        if values[key] < 1:
            raise InvalidInput(f"{key}: must be at least 1")
    if values["security.token_default_days"] < 0:
        raise InvalidInput("security.token_default_days: cannot be negative")
    if not 50 <= values["dns.timeout_ms"] <= 30_000:
        raise InvalidInput("dns.timeout_ms: must be between 50 and 30000")
    if values["dns.cache_seconds"] < 0:
        raise InvalidInput("dns.cache_seconds: cannot be negative")
    for server in values["dns.servers"]:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidInput(f"dns.servers: {server!r} is not an IP address") from None
    parse_rules(values["dns.rules"])
    for entry in values["simple.mirrors"]:
        name, sep, url = entry.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
            raise InvalidInput(f"simple.mirrors: {entry!r} is not SLUG=URL or FAMILY=URL "
                               "(an http or https URL)")


def config_path_from_env(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("DRAGONFLY_CONFIG", str(DEFAULT_CONFIG_PATH)))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_toml(values: Mapping[str, Any] | None = None) -> str:
    """A complete config file: every setting present, each preceded by its help."""
    values = values or {}
    lines = ["# Dragonfly configuration. Every setting is listed with its default.",
             "# Environment variables DRAGONFLY_<SECTION>_<NAME> override this file.", ""]
    section = None
    for s in SETTINGS:
        if s.section != section:
            if section is not None:
                lines.append("")
            lines.append(f"[{s.section}]")
            section = s.section
        lines.append(f"# {s.help}")
        if s.choices:
            lines.append(f"# One of: {', '.join(s.choices)}.")
        lines.append(f"{s.name} = {_toml_value(values.get(s.key, s.default))}")
    return "\n".join(lines) + "\n"


def settings_markdown() -> str:
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        choices = f" One of: {', '.join(s.choices)}." if s.choices else ""
        rows.append(f"| `{s.key}` | `{s.env}` | `{_toml_value(s.default)}` | {s.help}{choices} |")
    return "\n".join(rows)
