"""The per-MAC iPXE script: the one decision of what a booting machine runs next."""

from __future__ import annotations

from dragonfly.domain.model import Machine, Workflow, boots_own_disk

KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8 panic=30"


def discovery_script(mac: str, base: str) -> str:
    q = f"?mac={mac}"
    return (
        "#!ipxe\n"
        f"echo Dragonfly: {mac} boots the discovery environment\n"
        f"kernel {base}/boot/discovery/vmlinuz{q} initrd=initrd.img "
        f"dragonfly.url={base} dragonfly.mac={mac} {KERNEL_ARGS}\n"
        f"initrd --name initrd.img {base}/boot/discovery/initrd.img{q}\n"
        "boot\n"
    )


def local_boot_script(machine: Machine) -> str:
    # UEFI: leave iPXE with a failure, so the firmware tries its next boot entry (the
    # installed OS): EDK2's BdsDxe only moves on when an entry fails; one that returns success
    # ends in the boot manager's menu (found with OVMF in the lab).
    # BIOS: boot the first hard disk directly; if that fails, leave to the next device.
    return (
        "#!ipxe\n"
        f"echo Dragonfly: {machine.name} is {machine.state.value}; booting the local disk\n"
        "iseq ${platform} efi && exit 1 ||\n"
        "sanboot --no-describe --drive 0x80 || exit\n"
    )


def ipxe_script(machine: Machine | None, workflow: Workflow | None, mac: str, base: str
                ) -> str:
    """The decision per MAC. Unknown and discovered machines (and any not yet running an OS)
    boot discovery, where the agent also writes a deployment's image; installed machines, and
    deploying ones whose image is written, boot their disk (``boots_own_disk``)."""
    if machine is not None and boots_own_disk(machine, workflow):
        return local_boot_script(machine)
    return discovery_script(mac, base)
