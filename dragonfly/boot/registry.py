"""The boot-method registry: which loader or URL a booting client gets, and why.

One registry is read by proxyDHCP (what to offer), TFTP and HTTP (which request paths name a
loader). ``BootRegistry.decide`` is a pure function from what a client said about itself
(``ClientFacts``) to a ``BootDecision`` carrying a plain-language reason for the boot doctor.

Boot-loop avoidance (see the lab notes): firmware PXE (EDK2, vendor ROMs) always gets a
loader over TFTP. A client running iPXE gets the per-MAC HTTP script when Dragonfly sent this
MAC its loader moments ago (so this is our iPXE coming back). Any other iPXE (a NIC ROM, such
as QEMU's, which sends user class iPXE and option 175) is chainloaded into Dragonfly's own
bundled iPXE once, so every script runs under the same build; with
``chainload_foreign_ipxe=False`` an iPXE listing HTTP in option 175 gets the script directly.
An iPXE without option 175 or without HTTP in it is always chainloaded first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

IPXE_USER_CLASS = "iPXE"
SCRIPT_PATH = "/boot/{mac}.ipxe"
LOADER_HTTP_PATH = "/boot/loaders/{loader}"

# RFC 4578 / IANA "Processor Architecture Types" (option 93), the ones worth naming.
ARCH_NAMES: dict[int, str] = {
    0: "x86 BIOS", 1: "NEC PC-98", 2: "Itanium", 6: "x86 UEFI", 7: "x64 UEFI",
    9: "x64 UEFI", 10: "ARM32 UEFI", 11: "ARM64 UEFI", 15: "x86 UEFI HTTP",
    16: "x64 UEFI HTTP", 18: "ARM32 UEFI HTTP", 19: "ARM64 UEFI HTTP", 20: "x86 BIOS HTTP",
    25: "RISC-V 32 UEFI", 27: "RISC-V 64 UEFI",
}


def arch_name(arch: int | None) -> str:
    if arch is None:
        return "unknown architecture"
    return f"{ARCH_NAMES.get(arch, 'architecture')} (arch {arch})"


@dataclass(frozen=True)
class BootMethod:
    name: str
    arches: frozenset[int]
    loader: str
    uefi: bool
    http_boot: bool = False  # UEFI HTTP boot: the answer is a URL, option 60 is HTTPClient
    loader_choices: tuple[str, ...] = ()  # loaders an operator may pick instead
    description: str = ""

    def with_loader(self, loader: str) -> BootMethod:
        if loader != self.loader and loader not in self.loader_choices:
            raise ValueError(f"{self.name}: loader {loader!r} is not one of "
                             f"{', '.join((self.loader, *self.loader_choices))}")
        choices = tuple(dict.fromkeys((self.loader, *self.loader_choices)))
        return BootMethod(self.name, self.arches, loader, self.uefi, self.http_boot,
                          tuple(c for c in choices if c != loader), self.description)

    @property
    def all_loaders(self) -> tuple[str, ...]:
        return (self.loader, *self.loader_choices)


DEFAULT_METHODS: tuple[BootMethod, ...] = (
    BootMethod("bios", frozenset({0}), "undionly.kpxe", uefi=False,
               loader_choices=("ipxe.pxe",),
               description="legacy BIOS PXE: iPXE over the NIC's own UNDI driver"),
    BootMethod("uefi-x64", frozenset({7, 9}), "ipxe.efi", uefi=True,
               loader_choices=("snponly.efi",),
               description="x86-64 UEFI PXE: iPXE with its own NIC drivers (ipxe.efi) or the "
                           "firmware's SNP driver (snponly.efi, for NICs iPXE cannot drive)"),
    BootMethod("uefi-arm64", frozenset({11}), "snp.efi", uefi=True,
               loader_choices=("snponly.efi",), description="ARM64 UEFI PXE"),
    BootMethod("uefi-http-x64", frozenset({16}), "ipxe.efi", uefi=True, http_boot=True,
               loader_choices=("snponly.efi",),
               description="x86-64 UEFI HTTP boot: the loader by URL"),
    BootMethod("uefi-http-arm64", frozenset({19}), "snp.efi", uefi=True, http_boot=True,
               loader_choices=("snponly.efi",), description="ARM64 UEFI HTTP boot"),
)


@dataclass(frozen=True)
class ClientFacts:
    """What a client said about itself in one DHCP message, plus what we remember of it."""

    mac: str
    arch: int | None = None  # option 93's first entry, else from the vendor class
    vendor_class: str = ""
    user_classes: tuple[str, ...] = ()
    has_ipxe_options: bool = False  # option 175 present
    ipxe_features: frozenset[str] = field(default_factory=frozenset)
    loader_sent: str | None = None  # a loader Dragonfly sent this MAC recently (memory)

    @property
    def is_ipxe(self) -> bool:
        return self.has_ipxe_options or IPXE_USER_CLASS in self.user_classes

    @property
    def is_http_client(self) -> bool:
        return self.vendor_class.startswith("HTTPClient")

    @property
    def is_pxe_client(self) -> bool:
        return (self.vendor_class.startswith("PXEClient") or self.is_http_client
                or self.is_ipxe)


@dataclass(frozen=True)
class BootEndpoints:
    """Where booting clients reach us."""

    http_host: str
    http_port: int
    tftp_server: str


@dataclass(frozen=True)
class BootDecision:
    answer: bool
    reason: str
    method: str | None = None
    loader: str | None = None  # the loader file this answer sends (TFTP or HTTP), if any
    boot_file: str = ""  # what goes into the reply's file field: a TFTP name or a URL
    next_server: str = "0.0.0.0"
    vendor_class: str = "PXEClient"  # option 60 to echo in the reply
    script: bool = False  # boot_file is the per-MAC iPXE script URL

    @cached_property
    def summary(self) -> dict[str, object]:
        """What the boot doctor shows of this decision. Computed once (decisions are cached
        per kind of client and this goes into every OFFER's timeline step): do not mutate,
        copy it."""
        return {"answer": self.answer, "method": self.method, "loader": self.loader,
                "boot_file": self.boot_file, "next_server": self.next_server,
                "script": self.script, "reason": self.reason}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class BootRegistry:
    def __init__(self, methods: Iterable[BootMethod] = DEFAULT_METHODS, *,
                 loaders: Mapping[str, str] | None = None,
                 chainload_foreign_ipxe: bool = True) -> None:
        """``loaders``: method name -> loader, e.g. ``{"uefi-x64": "snponly.efi"}``.
        ``chainload_foreign_ipxe``: send an iPXE that Dragonfly did not load itself (a NIC
        ROM) our own loader once, even when it could fetch the script, so every script runs
        under the same, bundled iPXE build. False: an iPXE that lists HTTP in option 175
        gets the script directly (one TFTP download less)."""
        chosen = dict(loaders or {})
        self.methods: tuple[BootMethod, ...] = tuple(
            m.with_loader(chosen.pop(m.name)) if m.name in chosen else m for m in methods)
        if chosen:
            raise ValueError(f"no boot method named {', '.join(sorted(chosen))}")
        self.chainload_foreign_ipxe = chainload_foreign_ipxe
        self.loaders: frozenset[str] = frozenset(
            name for m in self.methods for name in m.all_loaders)

    def method(self, name: str) -> BootMethod | None:
        return next((m for m in self.methods if m.name == name), None)

    def method_for_arch(self, arch: int, *, http: bool = False) -> BootMethod | None:
        for m in self.methods:
            if arch in m.arches and m.http_boot == http:
                return m
        if http:  # an HTTP client naming a PXE arch code: serve that method's loader by URL
            return next((m for m in self.methods if arch in m.arches and m.uefi), None)
        return None

    # --- paths and URLs -----------------------------------------------------------------------

    def loader_for_path(self, path: str) -> str | None:
        """The loader a TFTP or HTTP request path names, or None (never a path outside the
        registry's loader names, so traversal is impossible by construction)."""
        p = path.strip()
        while p.startswith(("/", "./")):
            p = p[1:] if p.startswith("/") else p[2:]
        prefix = LOADER_HTTP_PATH.split("{", 1)[0].lstrip("/")
        if p.startswith(prefix):
            p = p[len(prefix):]
        return p if p in self.loaders else None

    @staticmethod
    def script_url(endpoints: BootEndpoints, mac: str) -> str:
        path = SCRIPT_PATH.format(mac=mac.lower().replace("-", ":"))
        return f"http://{_host(endpoints.http_host)}:{endpoints.http_port}{path}"

    @staticmethod
    def loader_url(endpoints: BootEndpoints, loader: str) -> str:
        path = LOADER_HTTP_PATH.format(loader=loader)
        return f"http://{_host(endpoints.http_host)}:{endpoints.http_port}{path}"

    # --- the decision -------------------------------------------------------------------------

    def decide(self, facts: ClientFacts, endpoints: BootEndpoints) -> BootDecision:
        if not facts.is_pxe_client:
            return BootDecision(False, "not a network-boot client (no PXEClient/HTTPClient "
                                       "vendor class, no iPXE user class): left to the site's "
                                       "DHCP server")
        if facts.is_ipxe:
            return self._decide_ipxe(facts, endpoints)
        if facts.is_http_client:
            return self._decide_http(facts, endpoints)
        return self._decide_pxe(facts, endpoints)

    def _script(self, facts: ClientFacts, endpoints: BootEndpoints, why: str) -> BootDecision:
        url = self.script_url(endpoints, facts.mac)
        return BootDecision(True, f"{why}: sent the per-MAC iPXE script {url}", "ipxe",
                            None, url, endpoints.tftp_server, self._echo(facts), script=True)

    @staticmethod
    def _echo(facts: ClientFacts) -> str:
        return "HTTPClient" if facts.is_http_client else "PXEClient"

    def _decide_ipxe(self, facts: ClientFacts, endpoints: BootEndpoints) -> BootDecision:
        if facts.loader_sent:
            return self._script(facts, endpoints,
                                f"iPXE is running and this MAC was just sent "
                                f"{facts.loader_sent}, so this is Dragonfly's iPXE coming "
                                f"back; never the loader again (that is the boot loop)")
        has_http = "http" in facts.ipxe_features
        if has_http and not self.chainload_foreign_ipxe:
            return self._script(facts, endpoints,
                                "iPXE that supports HTTP (its option 175 lists it)")
        arch = facts.arch if facts.arch is not None else 0
        method = self.method_for_arch(arch)
        if method is None:
            return self._script(facts, endpoints,
                                f"iPXE on {arch_name(facts.arch)}, for which there is no "
                                f"loader to chainload; trying the script directly")
        if has_http:
            why = ("an iPXE that Dragonfly did not load (e.g. a NIC ROM); chainloading keeps "
                   "every script on Dragonfly's bundled iPXE build")
        elif facts.has_ipxe_options:
            why = "an iPXE without HTTP support (option 175 does not list it)"
        else:
            why = "an iPXE that did not send its feature list (no option 175)"
        return self._loader(method, facts, endpoints,
                            f"{why}: chainloading Dragonfly's {method.loader} once; when it "
                            f"comes back as iPXE it gets the script")

    def _loader(self, method: BootMethod, facts: ClientFacts, endpoints: BootEndpoints,
                reason: str) -> BootDecision:
        return BootDecision(True, reason, method.name, method.loader, method.loader,
                            endpoints.tftp_server, self._echo(facts))

    def _decide_pxe(self, facts: ClientFacts, endpoints: BootEndpoints) -> BootDecision:
        assumed = ""
        arch = facts.arch
        if arch is None:
            arch, assumed = 0, " (it sent no architecture; assumed BIOS)"
        method = self.method_for_arch(arch)
        if method is None:
            return BootDecision(False, f"PXE firmware on {arch_name(arch)}: no boot method "
                                       f"for that architecture, not answered")
        return self._loader(method, facts, endpoints,
                            f"PXE firmware on {arch_name(arch)}{assumed}: sent "
                            f"{method.loader} over TFTP from {endpoints.tftp_server}")

    def _decide_http(self, facts: ClientFacts, endpoints: BootEndpoints) -> BootDecision:
        arch = facts.arch if facts.arch is not None else 16
        method = self.method_for_arch(arch, http=True)
        if method is None:
            return BootDecision(False, f"UEFI HTTP boot client on {arch_name(arch)}: no boot "
                                       f"method for that architecture, not answered")
        url = self.loader_url(endpoints, method.loader)
        return BootDecision(True, f"UEFI HTTP boot client on {arch_name(arch)}: sent "
                                  f"{method.loader} by URL {url}", method.name, method.loader,
                            url, endpoints.tftp_server, "HTTPClient")
