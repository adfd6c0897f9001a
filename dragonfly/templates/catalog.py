"""The built-in catalog: vendors' own cloud images, where they publish their checksums, and how
to find each image's root filesystem once it is on a disk.

Every fact below was looked up, not guessed; the comment on each entry says where. Image URLs
are each vendor's "latest" alias, so a deployment gets the current point release and the
checksum is read from the vendor's checksum file at download time (never pinned here).

Sizes are approximate: ``image_bytes`` is the image's virtual (raw) size, the bytes the agent
writes to disk, which progress and ETA are computed from; the demo uses it too.

Bare metal note: RHEL-family "GenericCloud" images have linux-firmware removed (Rocky's
kickstart and AlmaLinux's gencloud_guest role both do), so NICs that need firmware blobs come
up only after the operator installs it; most server NICs (Intel, Mellanox) do not need it.
"""

from __future__ import annotations

from dragonfly.templates.model import OsTemplate

GiB = 1024**3

# GPT type "Linux root (x86-64)" from the Discoverable Partitions Specification.
LINUX_ROOT_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"

# Debian: https://cloud.debian.org/images/cloud/ publishes <release>/latest/ with
# debian-<N>-generic-amd64.{qcow2,raw,tar.xz} and SHA512SUMS beside them ("HEX  NAME" lines).
# "generic", not "genericcloud": genericcloud is "smaller ... by excluding drivers for physical
# hardware" (debian-cloud-images' own description, quoted in libosinfo osinfo-db MR 268).
# Layout, from debian-cloud-images config_space/*/hooks/partition.AMD64: GPT, p14 BIOS boot,
# p15 EFI system, p1 root of type "Linux root (x86-64)" formatted ext4 with no label.
# Bootloader: grub-cloud-amd64, which depends on shim-signed and runs `grub-install
# --target=x86_64-efi --uefi-secure-boot --force-extra-removable` (its postinst, read from
# the bookworm package): shim in \EFI\debian\ plus the removable path.
_DEBIAN = "https://cloud.debian.org/images/cloud"


def _debian(version: str, codename: str, size: int) -> OsTemplate:
    return OsTemplate(
        slug=f"debian-{version}", name=f"Debian {version} ({codename})", family="debian",
        version=version, url=f"{_DEBIAN}/{codename}/latest/debian-{version}-generic-amd64.qcow2",
        format="qcow2", checksum_url=f"{_DEBIAN}/{codename}/latest/SHA512SUMS",
        checksum_algorithm="sha512", root_parttype=LINUX_ROOT_X86_64, root_fstype="ext4",
        uefi_loader="\\EFI\\debian\\shimx64.efi", default_user="debian", image_bytes=size,
        description=f"Debian {version} generic cloud image (with drivers for physical hardware)",
        builtin=True, source="builtin")


# Ubuntu: https://cloud-images.ubuntu.com/releases/<version>/release/ holds
# ubuntu-<version>-server-cloudimg-amd64.img (qcow2 despite the .img) and SHA256SUMS
# ("HEX *NAME" lines); the numeric directory is an alias of the codename's (both are used in
# the wild, e.g. lima-vm's templates use releases/jammy/release/). The root filesystem is ext4
# labelled "cloudimg-rootfs" (the fstab of every Ubuntu cloud image: LABEL=cloudimg-rootfs);
# 23.10 and later also have a separate /boot partition, so the label, not a type GUID, finds
# root. Shim and GRUB are in \EFI\ubuntu\.
_UBUNTU = "https://cloud-images.ubuntu.com/releases"


def _ubuntu(version: str, codename: str, size: int) -> OsTemplate:
    base = f"{_UBUNTU}/{version}/release"
    return OsTemplate(
        slug=f"ubuntu-{version}", name=f"Ubuntu {version} LTS ({codename})", family="ubuntu",
        version=version, url=f"{base}/ubuntu-{version}-server-cloudimg-amd64.img",
        format="qcow2", checksum_url=f"{base}/SHA256SUMS",
        checksum_algorithm="sha256", root_label="cloudimg-rootfs", root_fstype="ext4",
        uefi_loader="\\EFI\\ubuntu\\shimx64.efi", default_user="ubuntu", image_bytes=size,
        description=f"Ubuntu Server {version} LTS cloud image", builtin=True, source="builtin")


# Rocky: https://dl.rockylinux.org/pub/rocky/<major>/images/x86_64/ holds
# Rocky-<major>-GenericCloud-Base.latest.x86_64.qcow2 and CHECKSUM, in BSD format:
# "SHA256 (Rocky-9-GenericCloud-Base.latest.x86_64.qcow2) = HEX" (quoted verbatim by several
# projects' checksum parsers; the file lists the ".latest" names as well as dated ones).
# Layout, from rocky-linux/kickstarts Rocky-<major>-GenericCloud-Base.ks: GPT with EFI (100M),
# /boot xfs labelled "boot" (1000M), prepboot, biosboot, and / as an unlabelled xfs of 8000M
# and more: no label or type to go by, so root is "the largest xfs partition". The kickstart
# renames cloud-init's default user to "rocky". Shim is in \EFI\rocky\.
_ROCKY = "https://dl.rockylinux.org/pub/rocky"


def _rocky(major: str) -> OsTemplate:
    base = f"{_ROCKY}/{major}/images/x86_64"
    return OsTemplate(
        slug=f"rocky-{major}", name=f"Rocky Linux {major}", family="rhel", version=major,
        url=f"{base}/Rocky-{major}-GenericCloud-Base.latest.x86_64.qcow2", format="qcow2",
        checksum_url=f"{base}/CHECKSUM", checksum_algorithm="sha256", root_fstype="xfs",
        uefi_loader="\\EFI\\rocky\\shimx64.efi", default_user="rocky", image_bytes=10 * GiB,
        description=f"Rocky Linux {major} GenericCloud (Base, no LVM) image", builtin=True,
        source="builtin")


# AlmaLinux: https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/ holds
# AlmaLinux-9-GenericCloud-latest.x86_64.qcow2 and CHECKSUM (BSD format, "SHA256 (...) = HEX").
# Layout, from AlmaLinux/cloud-images http/almalinux-9.gencloud-x86_64.ks: GPT partitions
# named biosboot, "EFI System Partition", boot (xfs) and root (xfs, the rest of the disk), so
# the GPT partition label "root" finds it. The gencloud_guest role gives sudo to "almalinux",
# cloud-init's default user there. Shim is in \EFI\almalinux\.
_ALMA = "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images"

BUILTIN: tuple[OsTemplate, ...] = (
    _debian("12", "bookworm", 2 * GiB),
    _debian("13", "trixie", 3 * GiB),
    _ubuntu("22.04", "jammy", 2_361_393_152),
    _ubuntu("24.04", "noble", 3_758_096_384),
    _rocky("9"),
    _rocky("10"),
    OsTemplate(
        slug="almalinux-9", name="AlmaLinux 9", family="rhel", version="9",
        url=f"{_ALMA}/AlmaLinux-9-GenericCloud-latest.x86_64.qcow2", format="qcow2",
        checksum_url=f"{_ALMA}/CHECKSUM", checksum_algorithm="sha256", root_label="root",
        root_fstype="xfs", uefi_loader="\\EFI\\almalinux\\shimx64.efi",
        default_user="almalinux", image_bytes=10 * GiB,
        description="AlmaLinux 9 GenericCloud image", builtin=True, source="builtin"),
)
BUILTIN_BY_SLUG: dict[str, OsTemplate] = {t.slug: t for t in BUILTIN}
