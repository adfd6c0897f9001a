"""Each distribution's network installer: where its kernel and initrd come from (through the
image store: downloaded and verified, or imported offline), which repository it installs
from, and the kernel command line that points it at its answer file.

Kernel lines, from each installer's documentation:
- Debian (debian-installer): ``auto=true priority=critical url=<preseed>``; the network and
  the hostname go on the kernel line too (``netcfg/...``), because a preseed fetched over the
  network is read only after the network is up.
- Ubuntu (subiquity, from the live-server ISO's casper kernel): ``ip=dhcp url=<ISO>
  autoinstall ds=nocloud-net;s=<seed dir>/``; casper loads the ISO into RAM (3-4 GiB).
- Rocky/Alma (anaconda): ``inst.repo=<repo> inst.ks=<kickstart> inst.ks.sendmac``.
- Proxmox VE: no network boot (Proxmox does not support PXE-booting its installer). The
  operator prepares the release ISO once with ``proxmox-auto-install-assistant prepare-iso
  <iso> --fetch-from http --url <Dragonfly>/simple/proxmox/answer`` and boots it through the
  BMC's virtual media (or a USB stick); its automated installer POSTs the machine's system
  information (JSON) to that URL and gets the machine's answer.toml back. While such an
  install runs, the machine's iPXE script leaves network boot so the firmware goes on to the
  virtual media.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dragonfly.errors import InvalidInput
from dragonfly.simple.spec import InstallSpec

if TYPE_CHECKING:
    from dragonfly.templates.model import OsTemplate

CONSOLE = "console=tty0 console=ttyS0,115200n8"
ROLES = ("kernel", "initrd")


@dataclass(frozen=True)
class InstallerFile:
    role: str  # "kernel" or "initrd"
    url: str
    checksum_url: str = ""  # the distribution's checksum file
    checksum_entry: str = ""  # its line for this file, by full path (names repeat)
    # "sums" (``HEX  ./path`` lines) or "treeinfo" (anaconda's ``.treeinfo``: a
    # ``[checksums]`` section of ``path = sha256:HEX``).
    checksum_format: str = "sums"


@dataclass(frozen=True)
class Installer:
    slug: str  # the OS template it installs
    family: str
    files: tuple[InstallerFile, ...]
    repo: str  # the distribution's repository (site or template override: options.mirror)
    iso: str = ""  # Ubuntu: the live-server ISO casper fetches
    memory_note: str = ""
    # The package that ships the kernel and initrd, for an offline import.
    package: str = ""
    package_paths: tuple[str, ...] = ()
    name: str = ""  # Proxmox: no OS template in the catalog, so the installer names it

    @property
    def network_boot(self) -> bool:
        """Whether Dragonfly boots this installer over the network (Proxmox: an ISO)."""
        return self.family != "proxmox"

    def image_key(self, role: str) -> str:
        """The template name the image store records the file under."""
        return f"installer:{self.slug}:{role}"


def _debian(version: str, codename: str) -> Installer:
    images = (f"http://deb.debian.org/debian/dists/{codename}/main/installer-amd64/current/"
              "images")
    base = "netboot/debian-installer/amd64"
    text = f"usr/lib/debian-installer/images/{version}/amd64/text/debian-installer/amd64"
    return Installer(
        f"debian-{version}", "debian",
        (InstallerFile("kernel", f"{images}/{base}/linux", f"{images}/SHA256SUMS",
                       f"./{base}/linux"),
         InstallerFile("initrd", f"{images}/{base}/initrd.gz", f"{images}/SHA256SUMS",
                       f"./{base}/initrd.gz")),
        repo="http://deb.debian.org/debian",
        package=f"debian-installer-{version}-netboot-amd64",
        package_paths=(f"{text}/linux", f"{text}/initrd.gz"))


def _ubuntu(version: str, point: str) -> Installer:
    base = f"https://releases.ubuntu.com/{version}"
    return Installer(
        f"ubuntu-{version}", "ubuntu",
        # No checksum file covers the loose netboot files here (the release's SHA256SUMS
        # lists the ISOs and the netboot tarball): they are refused unless imported.
        (InstallerFile("kernel", f"{base}/netboot/amd64/linux"),
         InstallerFile("initrd", f"{base}/netboot/amd64/initrd")),
        repo="http://archive.ubuntu.com/ubuntu",
        iso=f"{base}/ubuntu-{point}-live-server-amd64.iso",
        memory_note="casper loads the live-server ISO into RAM: the machine needs 3-4 GiB")


def _rhel(slug: str, repo: str) -> Installer:
    # The repository's .treeinfo lists the pxeboot files' sha256 in its [checksums] section:
    # fetched from the same mirror, a missing entry or a mismatch refuses the download.
    return Installer(
        slug, "rhel",
        tuple(InstallerFile(role, f"{repo}{path}", f"{repo}.treeinfo", path, "treeinfo")
              for role, path in (("kernel", "images/pxeboot/vmlinuz"),
                                 ("initrd", "images/pxeboot/initrd.img"))),
        repo=repo)


def _proxmox(major: str, iso: str) -> Installer:
    # No kernel or initrd to fetch: the prepared ISO holds the installer (see the top).
    return Installer(f"proxmox-ve-{major}", "proxmox", (), repo="", iso=iso,
                     name=f"Proxmox VE {major}",
                     memory_note="boots the prepared ISO (virtual media or USB), not the "
                     "network: prepare it with proxmox-auto-install-assistant --fetch-from "
                     "http --url <Dragonfly>/simple/proxmox/answer")


INSTALLERS: dict[str, Installer] = {i.slug: i for i in (
    _debian("12", "bookworm"), _debian("13", "trixie"),
    _ubuntu("22.04", "22.04.5"), _ubuntu("24.04", "24.04.3"),
    _rhel("rocky-9", "https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os/"),
    _rhel("rocky-10", "https://dl.rockylinux.org/pub/rocky/10/BaseOS/x86_64/os/"),
    _rhel("almalinux-9", "https://repo.almalinux.org/almalinux/9/BaseOS/x86_64/os/"),
    # The ISOs the prepared one is made from (8.3-1 or newer: root_password_hashed and the
    # [first-boot] hook appeared there).
    _proxmox("8", "https://enterprise.proxmox.com/iso/proxmox-ve_8.4-1.iso"),
    _proxmox("9", "https://enterprise.proxmox.com/iso/proxmox-ve_9.1-1.iso"),
)}


def iso_template(slug: str) -> OsTemplate | None:
    """The OS template of an installer the catalog has no image for (Proxmox VE), made from
    the installer table; None for every other slug."""
    installer = INSTALLERS.get(slug)
    if installer is None or installer.network_boot:
        return None
    from dragonfly.templates.model import OsTemplate

    return OsTemplate(slug=slug, name=installer.name, family=installer.family,
                      version=slug.rsplit("-", 1)[-1], url=installer.iso, format="iso",
                      description=installer.memory_note, builtin=True, source="builtin")


def installer_for(slug: str) -> Installer:
    installer = INSTALLERS.get(slug)
    if installer is None:
        raise InvalidInput(f"Simple mode has no installer for {slug!r}",
                           {"installers": sorted(INSTALLERS)})
    return installer


def kernel_args(installer: Installer, spec: InstallSpec, answer_url: str) -> str:
    """The installer's kernel command line (``answer_url``: the answer file, or for Ubuntu
    the seed directory holding user-data and meta-data)."""
    if not installer.network_boot:
        raise InvalidInput(f"{installer.slug} is installed from its prepared ISO, not booted "
                           "over the network")
    if installer.family == "debian":
        args = ["auto=true", "priority=critical", f"url={answer_url}", "interface=auto",
                f"netcfg/get_hostname={spec.hostname}",
                f"netcfg/get_domain={spec.domain or 'localdomain'}",
                f"hostname={spec.hostname}", f"domain={spec.domain or 'localdomain'}",
                f"locale={spec.locale}", f"keymap={spec.keyboard}",
                # An isolated provisioning network may have no default route (a local
                # mirror): netcfg would stop to ask whether to go on without one.
                "netcfg/no_default_route=true"]
        vlans = spec.network.vlans
        if vlans:
            args += ["netcfg/use_vlan=true", f"netcfg/vlan_id={vlans[0].id}"]
        v4 = [ipaddress.ip_interface(a) for a in spec.network.primary.addresses
              if ipaddress.ip_interface(a).version == 4]
        if v4:
            args += ["netcfg/disable_autoconfig=true", f"netcfg/get_ipaddress={v4[0].ip}",
                     f"netcfg/get_netmask={v4[0].netmask}", "netcfg/confirm_static=true"]
            if spec.network.primary.gateway4:
                args.append(f"netcfg/get_gateway={spec.network.primary.gateway4}")
            if spec.network.nameservers:
                args.append("netcfg/get_nameservers=" + ",".join(spec.network.nameservers))
        args += ["---", CONSOLE]  # after ---: also the installed system's kernel arguments
        return " ".join(args)
    if installer.family == "ubuntu":
        return " ".join(["ip=dhcp", f"url={installer.iso}", "autoinstall",
                         f"ds=nocloud-net;s={answer_url}/", "cloud-config-url=/dev/null",
                         CONSOLE, "---"])
    repo = spec.mirror or installer.repo
    v4 = [ipaddress.ip_interface(a) for a in spec.network.primary.addresses
          if ipaddress.ip_interface(a).version == 4]
    # dracut's ip=<client>::<gateway>:<netmask>:<hostname>::none for a static address
    ip = "dhcp" if not v4 else (f"{v4[0].ip}::{spec.network.primary.gateway4}:"
                                f"{v4[0].netmask}:{spec.hostname}::none")
    return " ".join([f"inst.repo={repo}", f"inst.ks={answer_url}", "inst.ks.sendmac",
                     f"ip={ip}", "inst.text", CONSOLE])
