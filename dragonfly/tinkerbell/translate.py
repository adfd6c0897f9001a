"""Dragonfly's records as Tinkerbell objects: machines as ``Hardware``, OS templates as
``Template``, deployments as ``Workflow``. Pure functions over plain data, shared by the
backend and the demo's simulated Tinkerbell deployments.

One ``Template`` per OS template (and image): what differs per deployment reaches it through
the Workflow's ``hardwareMap``, which Tinkerbell renders into the template as ``{{.key}}``:
``device_1`` (the MAC of the worker), ``dest_disk`` (the target disk) and ``seed_url`` (where the
deployment's NoCloud seed is served). Those are one-line values, so Go-templating them into the
template's text cannot break its YAML; the seed itself (multi-line, the operator's user-data) is
never templated: writefile puts a two-line ``meta-data`` naming ``seedfrom`` on the root
filesystem and cloud-init fetches the rest from Dragonfly.

The root filesystem is found by its filesystem label (``/dev/disk/by-label/``), never by a
partition number. A template that names its root only by GPT type or filesystem type (the
built-in Debian and Rocky) gets its root found in the stored image's own GPT by that rule
(``rootpart``) and named by its unique partition GUID (``/dev/disk/by-partuuid/``), which the
image carries onto every disk it is written to; until the image is stored it cannot be
translated (``root_partuuid`` empty).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dragonfly.domain.model import Machine, Workflow
from dragonfly.errors import InvalidInput
from dragonfly.tinkerbell import schema

API_VERSION = f"{schema.GROUP}/{schema.VERSION}"
OWNER_LABEL = "dragonfly.io/owner"
MANAGED_BY = ("app.kubernetes.io/managed-by", "dragonfly")
MACHINE_LABEL = "dragonfly.io/machine"
WORKFLOW_LABEL = "dragonfly.io/workflow"
TEMPLATE_LABEL = "dragonfly.io/template"

ACTIONS = "quay.io/tinkerbell/actions"
IMAGE2DISK = f"{ACTIONS}/image2disk:latest"
QEMUIMG2DISK = f"{ACTIONS}/qemuimg2disk:latest"
WRITEFILE = f"{ACTIONS}/writefile:latest"
KEXEC = f"{ACTIONS}/kexec:latest"
# The reboot as Tinkerbell's own examples do it: waitdaemon reports success, then reboots, so
# the workflow ends (and allowPXE goes off) before the machine restarts.
WAITDAEMON = "ghcr.io/jacobweinstock/waitdaemon:0.2.2"
SEED_DIR = "/var/lib/cloud/seed/nocloud"
COMPRESSIONS = ("gz", "xz", "zst", "bz2")
# Families whose images carry /vmlinuz and /initrd.img links on the root filesystem: kexec
# boots them without a firmware round trip; the rest reboot.
KEXEC_FAMILIES = ("debian", "ubuntu")

# The action list, as the panel shows it: name, label, share of the time.
STEPS: tuple[tuple[str, str, float], ...] = (
    ("stream-image", "Stream the image to disk", 0.70),
    ("write-seed", "Write the cloud-init seed", 0.05),
    ("boot-os", "Boot the installed OS", 0.25),
)
LABELS = {name: label for name, label, _ in STEPS}

# Tinkerbell's template format (tink's v1alpha1 "workflow template"): checked like the CRDs
# before a Template is sent, since the CRD only says ``data`` is a string.
TEMPLATE_DATA_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["version", "name", "tasks"],
    "properties": {
        "version": {"type": "string", "enum": ["0.1"]},
        "name": {"type": "string", "pattern": r"^\S+$"},
        "global_timeout": {"type": "integer"},
        "tasks": {"type": "array", "items": {
            "type": "object", "required": ["name", "worker", "actions"],
            "properties": {
                "name": {"type": "string", "pattern": r"^\S+$"},
                "worker": {"type": "string"},
                "volumes": {"type": "array", "items": {"type": "string"}},
                "environment": {"type": "object", "additionalProperties": {"type": "string"}},
                "actions": {"type": "array", "items": {
                    "type": "object", "required": ["name", "image", "timeout"],
                    "properties": {
                        "name": {"type": "string", "pattern": r"^\S+$"},
                        "image": {"type": "string", "pattern": r"^\S+$"},
                        "timeout": {"type": "integer"},
                        "command": {"type": "array", "items": {"type": "string"}},
                        "volumes": {"type": "array", "items": {"type": "string"}},
                        "environment": {"type": "object",
                                        "additionalProperties": {"type": "string"}},
                        "pid": {"type": "string"},
                    }}}}}}}}


@dataclass(frozen=True)
class TemplateSource:
    """What translation needs of an OS template and its prepared image."""

    slug: str
    family: str
    image_url: str  # where the installer fetches the image (Dragonfly's image store)
    image_format: str  # as served: qcow2, raw, or a compression of raw (gz, xz, zst, bz2)
    root_label: str = ""
    root_parttype: str = ""
    root_fstype: str = "ext4"
    root_partuuid: str = ""  # found in the stored image (rootpart) when there is no label
    kernel_args: str = ""
    timeout: int = 3600


def k8s_name(*parts: str) -> str:
    """A DNS-subdomain object name from ``parts`` (lowercased, other characters as '-')."""
    text = "-".join(p for p in parts if p).lower()
    text = re.sub(r"[^a-z0-9.-]+", "-", text).strip("-.")
    return re.sub(r"-{2,}", "-", text)[:253].strip("-.") or "x"


def hardware_name(machine_id: str) -> str:
    return k8s_name("df", machine_id)


def template_name(slug: str) -> str:
    return k8s_name("df", slug)


def workflow_name(workflow_id: str) -> str:
    return k8s_name("df", workflow_id)


def labels(owner: str, **extra: str) -> dict[str, str]:
    return {OWNER_LABEL: owner, MANAGED_BY[0]: MANAGED_BY[1], **extra}


def _meta(name: str, namespace: str, owner: str, extra: dict[str, str],
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": labels(owner, **extra)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def disk_device(disk: dict[str, Any]) -> str:
    name = str(disk.get("name", ""))
    return name if name.startswith("/dev/") else f"/dev/{name}"


def hardware(machine: Machine, namespace: str, owner: str, *, allow_pxe: bool,
             ssh_keys: list[str] | None = None) -> dict[str, Any]:
    """The machine as a ``Hardware``: one interface per MAC (the boot MAC first, with the
    address Dragonfly saw), its disks, and instance metadata."""
    macs = [machine.mac, *[m for m in machine.macs if m != machine.mac]] if machine.mac \
        else list(machine.macs)
    if not macs:
        raise InvalidInput(f"{machine.name} has no MAC address: Tinkerbell cannot boot it")
    hostname = k8s_name(machine.name)[:63].strip("-.")
    interfaces: list[dict[str, Any]] = []
    for index, mac in enumerate(macs):
        dhcp: dict[str, Any] = {"mac": mac.lower(), "hostname": hostname, "arch": "x86_64",
                                "uefi": True}
        if index == 0 and machine.ip:
            dhcp["ip"] = {"address": machine.ip, "family": 6 if ":" in machine.ip else 4}
        interfaces.append({"dhcp": dhcp, "netboot": {"allowPXE": allow_pxe and index == 0,
                                                     "allowWorkflow": True}})
    instance: dict[str, Any] = {"id": machine.id, "hostname": hostname,
                                "tags": list(machine.tags), "allow_pxe": allow_pxe}
    if ssh_keys:
        instance["ssh_keys"] = list(ssh_keys)
    spec: dict[str, Any] = {
        "interfaces": interfaces,
        "disks": [{"device": disk_device(d)} for d in machine.disks if d.get("name")],
        "metadata": {"instance": instance,
                     "manufacturer": {"slug": machine.vendor or "unknown"},
                     "state": machine.state.value},
    }
    return {"apiVersion": API_VERSION, "kind": "Hardware",
            "metadata": _meta(hardware_name(machine.id), namespace, owner,
                              {MACHINE_LABEL: machine.id},
                              {"dragonfly.io/machine-name": machine.name}),
            "spec": spec}


def needs_image_root(source: TemplateSource) -> bool:
    """Whether the root partition must be found in the stored image first (no label)."""
    return not source.root_label


def seed_partition(source: TemplateSource) -> str:
    """The root filesystem's device, by label or by the partition GUID found in the image by
    the template's type rule: never a partition number."""
    if source.root_label:
        return f"/dev/disk/by-label/{source.root_label}"
    if source.root_partuuid:
        return f"/dev/disk/by-partuuid/{source.root_partuuid}"
    raise InvalidInput(
        f"template {source.slug} names its root filesystem only by "
        f"{'GPT type' if source.root_parttype else 'filesystem type'}: its partition is found "
        "in the image once the image is stored (Dragonfly never guesses a partition number)")


def root_argument(source: TemplateSource) -> str:
    """The kernel's ``root=`` for kexec, by the same name as the seed's device."""
    if source.root_label:
        return f"root=LABEL={source.root_label}"
    return f"root=PARTUUID={source.root_partuuid}"


def _stream_action(source: TemplateSource) -> dict[str, Any]:
    env = {"DEST_DISK": "{{.dest_disk}}"}
    if source.image_format == "qcow2":
        return {"name": "stream-image", "image": QEMUIMG2DISK, "timeout": source.timeout,
                "environment": {**env, "IMG_URL": source.image_url}}
    if source.image_format == "raw":
        return {"name": "stream-image", "image": IMAGE2DISK, "timeout": source.timeout,
                "environment": {**env, "IMG_URL": source.image_url, "COMPRESSED": "false"}}
    if source.image_format in COMPRESSIONS:
        # image2disk picks its decompressor from the URL's extension; Dragonfly serves images
        # by digest, so the extension rides in a query string the store ignores.
        return {"name": "stream-image", "image": IMAGE2DISK, "timeout": source.timeout,
                "environment": {**env, "COMPRESSED": "true",
                                "IMG_URL": f"{source.image_url}?as=image.{source.image_format}"}}
    raise InvalidInput(f"template {source.slug}: Tinkerbell's actions cannot write a "
                       f"{source.image_format!r} image (qcow2, raw, gz, xz, zst, bz2)")


def template_data(source: TemplateSource) -> dict[str, Any]:
    """The Tinkerbell template (its ``spec.data``, as an object)."""
    root = seed_partition(source)
    fstype = source.root_fstype or "ext4"
    seed = {"name": "write-seed", "image": WRITEFILE, "timeout": 90,
            "environment": {"DEST_DISK": root, "FS_TYPE": fstype,
                            "DEST_PATH": f"{SEED_DIR}/meta-data",
                            # cloud-init's NoCloud: seedfrom sends it to Dragonfly for the rest.
                            "CONTENTS": "instance-id: {{.instance_id}}\n"
                                        "seedfrom: {{.seed_url}}\n",
                            "UID": "0", "GID": "0", "MODE": "0600", "DIRMODE": "0700"}}
    if source.family in KEXEC_FAMILIES:
        boot: dict[str, Any] = {
            "name": "boot-os", "image": KEXEC, "timeout": 90, "pid": "host",
            "environment": {"BLOCK_DEVICE": root, "FS_TYPE": fstype,
                            "KERNEL_PATH": "/vmlinuz", "INITRD_PATH": "/initrd.img",
                            "CMD_LINE": f"{root_argument(source)} ro "
                                        f"{source.kernel_args}".strip()}}
    else:
        boot = {"name": "boot-os", "image": WAITDAEMON, "timeout": 90, "pid": "host",
                "command": ["reboot"],
                "environment": {"IMAGE": "alpine", "WAIT_SECONDS": "10"},
                "volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}
    return {"version": "0.1", "name": template_name(source.slug),
            "global_timeout": source.timeout + 300,
            "tasks": [{"name": "os-installation", "worker": "{{.device_1}}",
                       "volumes": ["/dev:/dev", "/dev/console:/dev/console",
                                   "/lib/firmware:/lib/firmware:ro"],
                       "actions": [_stream_action(source), seed, boot]}]}


def template(source: TemplateSource, namespace: str, owner: str) -> dict[str, Any]:
    data = template_data(source)
    found: list[str] = []
    schema.check(data, TEMPLATE_DATA_SCHEMA, "spec.data", found)
    if found:
        raise InvalidInput(f"template {source.slug} makes an invalid Tinkerbell template: "
                           f"{'; '.join(found)}", {"problems": found})
    # JSON is YAML: Tinkerbell parses this text as it parses any template.
    return {"apiVersion": API_VERSION, "kind": "Template",
            "metadata": _meta(template_name(source.slug), namespace, owner,
                              {TEMPLATE_LABEL: k8s_name(source.slug)[:63]}),
            "spec": {"data": json.dumps(data, indent=1)}}


def target_disk(machine: Machine, choice: str) -> str:
    """The disk to write: the operator's choice (a /dev path, serial:, wwn:), else the first
    fixed disk the agent reported."""
    if choice.startswith("/dev/"):
        return choice
    if choice:
        key, _, wanted = choice.partition(":")
        for disk in machine.disks:
            if str(disk.get(key, "")) == wanted:
                return disk_device(disk)
        raise InvalidInput(f"{machine.name} has no disk with {key} {wanted!r}")
    fixed = [d for d in machine.disks if d.get("name") and not d.get("removable")]
    if not fixed:
        raise InvalidInput(f"{machine.name} reported no disk: choose one (a /dev path) in the "
                           "deploy options")
    return disk_device(fixed[0])


def workflow(wf: Workflow, machine: Machine, namespace: str, owner: str, *,
             seed_url: str) -> dict[str, Any]:
    """The deployment as a ``Workflow``: this machine's Hardware, the template's Template, and
    the per-deployment values in ``hardwareMap``."""
    return {"apiVersion": API_VERSION, "kind": "Workflow",
            "metadata": _meta(workflow_name(wf.id), namespace, owner,
                              {MACHINE_LABEL: machine.id, WORKFLOW_LABEL: wf.id}),
            "spec": {"templateRef": template_name(wf.template),
                     "hardwareRef": hardware_name(machine.id),
                     "hardwareMap": {"device_1": machine.mac.lower(),
                                     "dest_disk": target_disk(machine,
                                                              str(wf.options.get("disk", ""))),
                                     "instance_id": wf.id, "seed_url": seed_url},
                     "bootOptions": {"toggleAllowNetboot": True, "bootMode": "netboot"}}}


def new_actions() -> list[dict[str, Any]]:
    """The Dragonfly workflow's action list for a Tinkerbell deployment."""
    return [{"name": name, "label": label, "runner": "tinkerbell", "share": share,
             "state": "pending", "progress": 0.0, "started_at": None, "finished_at": None,
             "message": "", "image": ""}
            for name, label, share in STEPS]
