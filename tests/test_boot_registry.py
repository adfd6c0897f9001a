"""The boot-method registry and the per-MAC memory that keeps iPXE out of boot loops."""

from __future__ import annotations

import pytest

from dragonfly.boot import BootDecision, BootEndpoints, BootMemory, BootRegistry, ClientFacts

EP = BootEndpoints(http_host="10.0.0.1", http_port=3000, tftp_server="10.0.0.2")
MAC = "52:54:00:aa:bb:cc"
IPXE_FEATURES = frozenset({"http", "tftp", "dns", "bzimage"})


def firmware(arch: int | None, vendor: str | None = None) -> ClientFacts:
    if vendor is None:
        vendor = f"PXEClient:Arch:{arch:05d}:UNDI:003000" if arch is not None else "PXEClient"
    return ClientFacts(MAC, arch, vendor)


def ipxe(arch: int | None = 0, *, features: frozenset[str] | None = IPXE_FEATURES,
         loader_sent: str | None = None) -> ClientFacts:
    return ClientFacts(MAC, arch, "PXEClient", ("iPXE",), features is not None,
                       features or frozenset(), loader_sent)


@pytest.mark.parametrize(("arch", "method", "loader"), [
    (0, "bios", "undionly.kpxe"),
    (7, "uefi-x64", "ipxe.efi"),
    (9, "uefi-x64", "ipxe.efi"),
    (11, "uefi-arm64", "snp.efi"),
])
def test_firmware_pxe_gets_the_loader_for_its_arch(arch: int, method: str, loader: str
                                                   ) -> None:
    d = BootRegistry().decide(firmware(arch), EP)
    assert d.answer and not d.script
    assert (d.method, d.loader, d.boot_file) == (method, loader, loader)
    assert d.next_server == "10.0.0.2" and d.vendor_class == "PXEClient"
    assert f"arch {arch}" in d.reason and loader in d.reason


def test_missing_arch_is_taken_as_bios_and_says_so() -> None:
    d = BootRegistry().decide(firmware(None), EP)
    assert d.loader == "undionly.kpxe" and "assumed BIOS" in d.reason


def test_unknown_arch_is_not_answered_with_a_reason() -> None:
    d = BootRegistry().decide(firmware(2), EP)
    assert not d.answer and "Itanium (arch 2)" in d.reason and d.boot_file == ""


def test_non_pxe_clients_are_left_alone() -> None:
    d = BootRegistry().decide(ClientFacts(MAC, None, "MSFT 5.0"), EP)
    assert not d.answer and "site's DHCP" in d.reason


def test_uefi_loader_is_configurable_per_method() -> None:
    reg = BootRegistry(loaders={"uefi-x64": "snponly.efi"})
    assert reg.decide(firmware(7), EP).loader == "snponly.efi"
    assert reg.decide(firmware(0), EP).loader == "undionly.kpxe"
    with pytest.raises(ValueError, match="not one of"):
        BootRegistry(loaders={"uefi-x64": "evil.efi"})
    with pytest.raises(ValueError, match="no boot method named"):
        BootRegistry(loaders={"uefi-x86": "ipxe.efi"})


@pytest.mark.parametrize(("arch", "loader"), [(16, "ipxe.efi"), (19, "snp.efi"),
                                              (7, "ipxe.efi"), (None, "ipxe.efi")])
def test_uefi_http_boot_gets_a_url_and_httpclient_echo(arch: int | None, loader: str) -> None:
    vendor = f"HTTPClient:Arch:{arch:05d}:UNDI:003000" if arch is not None else "HTTPClient"
    d = BootRegistry().decide(ClientFacts(MAC, arch, vendor), EP)
    assert d.answer and d.vendor_class == "HTTPClient"
    assert d.boot_file == f"http://10.0.0.1:3000/boot/loaders/{loader}"
    assert d.loader == loader


def test_ipxe_coming_back_after_our_loader_gets_the_script() -> None:
    d = BootRegistry().decide(ipxe(loader_sent="undionly.kpxe"), EP)
    assert d.script and d.answer
    assert d.boot_file == "http://10.0.0.1:3000/boot/52:54:00:aa:bb:cc.ipxe"
    assert "boot loop" in d.reason and d.loader is None


def test_foreign_ipxe_rom_is_chainloaded_once_by_default() -> None:
    d = BootRegistry().decide(ipxe(), EP)
    assert not d.script and d.loader == "undionly.kpxe"
    assert "did not load" in d.reason


def test_foreign_ipxe_with_http_gets_the_script_when_chainloading_is_off() -> None:
    reg = BootRegistry(chainload_foreign_ipxe=False)
    d = reg.decide(ipxe(), EP)
    assert d.script and "supports HTTP" in d.reason
    # ... but not an iPXE that cannot do HTTP, or one that did not say
    assert reg.decide(ipxe(features=frozenset({"tftp"})), EP).loader == "undionly.kpxe"
    no_175 = reg.decide(ipxe(features=None), EP)
    assert no_175.loader == "undionly.kpxe" and "no option 175" in no_175.reason


def test_ipxe_on_uefi_is_chainloaded_into_the_uefi_loader() -> None:
    d = BootRegistry().decide(ipxe(7), EP)
    assert d.loader == "ipxe.efi"


def test_ipxe_on_an_arch_without_loader_tries_the_script() -> None:
    d = BootRegistry().decide(ipxe(2), EP)
    assert d.script and "no loader" in d.reason


def test_script_url_is_lowercase_colon_form_and_brackets_ipv6() -> None:
    assert BootRegistry.script_url(EP, "52-54-00-AA-BB-CC").endswith("/boot/52:54:00:aa:bb:cc.ipxe")
    v6 = BootEndpoints("fd00::1", 8080, "fd00::1")
    assert BootRegistry.script_url(v6, MAC).startswith("http://[fd00::1]:8080/boot/")


@pytest.mark.parametrize(("path", "loader"), [
    ("undionly.kpxe", "undionly.kpxe"),
    ("/ipxe.efi", "ipxe.efi"),
    ("./snponly.efi", "snponly.efi"),
    ("/boot/loaders/snp.efi", "snp.efi"),
    ("boot/loaders/ipxe.pxe", "ipxe.pxe"),
    ("../undionly.kpxe", None),
    ("/boot/loaders/../../etc/passwd", None),
    ("/etc/passwd", None),
    ("pxelinux.0", None),
    ("UNDIONLY.KPXE", None),
    ("", None),
    ("/boot/loaders/", None),
])
def test_loader_for_path(path: str, loader: str | None) -> None:
    assert BootRegistry().loader_for_path(path) == loader


def test_loader_for_path_follows_the_configured_choice() -> None:
    reg = BootRegistry(loaders={"uefi-x64": "snponly.efi"})
    assert reg.loader_for_path("ipxe.efi") == "ipxe.efi"  # still a choice some method uses
    assert reg.loader_for_path("snponly.efi") == "snponly.efi"


# --- memory ------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _loader_decision(loader: str = "undionly.kpxe") -> BootDecision:
    return BootDecision(True, "r", "bios", loader, loader, "10.0.0.2")


def test_memory_expires_and_is_bounded() -> None:
    clock = Clock()
    mem = BootMemory(ttl=60, max_entries=3, clock=clock)
    mem.record(MAC, 1, _loader_decision())
    assert mem.loader_sent(MAC) == "undionly.kpxe"
    assert mem.same_transaction(MAC, 1) is not None and mem.same_transaction(MAC, 2) is None
    clock.now += 61
    assert mem.loader_sent(MAC) is None and mem.get(MAC) is None and len(mem) == 0
    for i in range(5):
        mem.record(f"00:00:00:00:00:0{i}", i, _loader_decision())
    assert len(mem) == 3
    assert mem.get("00:00:00:00:00:00") is None and mem.get("00:00:00:00:00:04") is not None


def test_memory_keeps_the_loader_across_a_script_decision() -> None:
    mem = BootMemory(clock=Clock())
    mem.record(MAC, 1, _loader_decision())
    mem.record(MAC, 2, BootDecision(True, "r", "ipxe", None, "http://x", "1.2.3.4", script=True))
    assert mem.loader_sent(MAC) == "undionly.kpxe"
    mem.note_fetched(MAC, "undionly.kpxe")
    entry = mem.get(MAC)
    assert entry is not None and entry.fetched
    mem.forget(MAC)
    assert mem.get(MAC) is None


def test_a_whole_boot_never_loops() -> None:
    """ROM iPXE -> loader (retransmission too) -> our iPXE -> script; after a reboot much
    later, firmware gets the loader again rather than a script it cannot run."""
    clock = Clock()
    reg, mem = BootRegistry(), BootMemory(ttl=300, clock=clock)

    def ask(facts: ClientFacts, xid: int) -> BootDecision:
        decision = mem.same_transaction(MAC, xid)
        if decision is None:
            facts = ClientFacts(facts.mac, facts.arch, facts.vendor_class, facts.user_classes,
                                facts.has_ipxe_options, facts.ipxe_features,
                                mem.loader_sent(MAC))
            decision = reg.decide(facts, EP)
        mem.record(MAC, xid, decision)
        return decision

    assert ask(ipxe(), 10).loader == "undionly.kpxe"
    clock.now += 1
    assert ask(ipxe(), 10).loader == "undionly.kpxe"  # retransmission: same answer
    clock.now += 3
    assert ask(ipxe(), 11).script  # the chainloaded iPXE
    assert ask(ipxe(), 11).script
    clock.now += 3600
    assert ask(firmware(0), 12).loader == "undionly.kpxe"
    assert ask(ipxe(), 13).script
