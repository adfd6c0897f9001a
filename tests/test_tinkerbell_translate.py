"""Machines, templates and deployments as Tinkerbell objects, checked against Tinkerbell's CRD
schemas twice: by Dragonfly's own check (what runs before every request) and by jsonschema_rs
over the same openAPIV3Schema (an independent implementation, as a second opinion)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from typing import Any

import pytest
import yaml

from dragonfly.domain.model import Machine, State, Workflow
from dragonfly.errors import InvalidInput
from dragonfly.templates.catalog import BUILTIN
from dragonfly.tinkerbell import schema, translate
from tests.kubeapi import CRDS, PACKAGED_CRDS, crd_validators

NS, OWNER = "tink-system", "0a1b2c3d4e5f"
VALIDATORS = crd_validators()


def machine(**over: Any) -> Machine:
    values: dict[str, Any] = dict(
        id="3f2a9c0d1e4b", name="Web 01", state=State.READY, mac="52:54:00:aa:bb:01",
        macs=["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"], ip="10.0.0.21", vendor="QEMU",
        tags=["web"], disks=[{"name": "sr0", "removable": True},
                             {"name": "vda", "size_bytes": 20 << 30, "removable": False,
                              "serial": "SN123"}])
    values.update(over)
    return Machine(**values)


def source(**over: Any) -> translate.TemplateSource:
    values: dict[str, Any] = dict(slug="ubuntu-24.04", family="ubuntu",
                                  image_url="http://10.0.0.1:3000/images/" + "ab" * 32,
                                  image_format="qcow2", root_label="cloudimg-rootfs",
                                  root_fstype="ext4")
    values.update(over)
    return translate.TemplateSource(**values)


def both_accept(obj: dict[str, Any]) -> None:
    assert schema.problems(obj) == []
    errors = [e.message for e in VALIDATORS[obj["kind"]].iter_errors(obj)]
    assert errors == []


def test_the_shipped_crds_are_tinkerbells() -> None:
    if not CRDS.is_dir():
        pytest.skip("../shared/tinkerbell-crds is not beside this checkout")
    for path in CRDS.glob("*.yaml"):
        assert (PACKAGED_CRDS / path.name).read_text() == path.read_text(), path.name
    assert set(schema.KINDS) == {yaml.safe_load(p.read_text())["spec"]["names"]["kind"]
                                 for p in PACKAGED_CRDS.glob("*.yaml")}


def test_machine_as_hardware() -> None:
    obj = translate.hardware(machine(), NS, OWNER, allow_pxe=True, ssh_keys=["ssh-ed25519 A"])
    both_accept(obj)
    assert obj["metadata"]["name"] == "df-3f2a9c0d1e4b"
    assert obj["metadata"]["labels"][translate.OWNER_LABEL] == OWNER
    first, second = obj["spec"]["interfaces"]
    assert first["dhcp"]["mac"] == "52:54:00:aa:bb:01" and second["dhcp"]["mac"].endswith("02")
    assert first["dhcp"]["ip"] == {"address": "10.0.0.21", "family": 4}
    assert first["dhcp"]["hostname"] == "web-01"
    assert first["netboot"] == {"allowPXE": True, "allowWorkflow": True}
    assert second["netboot"]["allowPXE"] is False  # only the boot NIC netboots
    assert obj["spec"]["disks"] == [{"device": "/dev/sr0"}, {"device": "/dev/vda"}]
    off = translate.hardware(machine(), NS, OWNER, allow_pxe=False)
    assert off["spec"]["interfaces"][0]["netboot"]["allowPXE"] is False
    with pytest.raises(InvalidInput, match="no MAC"):
        translate.hardware(machine(mac="", macs=[]), NS, OWNER, allow_pxe=True)


@pytest.mark.parametrize(("fmt", "image", "url_end", "compressed"), [
    ("qcow2", translate.QEMUIMG2DISK, "ab" * 32, None),
    ("raw", translate.IMAGE2DISK, "ab" * 32, "false"),
    ("xz", translate.IMAGE2DISK, "?as=image.xz", "true"),
])
def test_template_streams_each_format_with_the_right_action(fmt: str, image: str, url_end: str,
                                                            compressed: str | None) -> None:
    obj = translate.template(source(image_format=fmt), NS, OWNER)
    both_accept(obj)
    data = yaml.safe_load(obj["spec"]["data"])  # JSON is YAML: Tinkerbell reads it as such
    assert data == json.loads(obj["spec"]["data"])
    stream = data["tasks"][0]["actions"][0]
    assert stream["image"] == image and stream["environment"]["IMG_URL"].endswith(url_end)
    assert stream["environment"].get("COMPRESSED") == compressed
    assert stream["environment"]["DEST_DISK"] == "{{.dest_disk}}"


def test_seed_goes_to_the_partition_found_by_label_never_a_number() -> None:
    data = translate.template_data(source())
    names = [a["name"] for a in data["tasks"][0]["actions"]]
    assert names == ["stream-image", "write-seed", "boot-os"] == [s[0] for s in translate.STEPS]
    seed = data["tasks"][0]["actions"][1]
    assert seed["image"] == translate.WRITEFILE
    assert seed["environment"]["DEST_DISK"] == "/dev/disk/by-label/cloudimg-rootfs"
    assert seed["environment"]["DEST_PATH"] == "/var/lib/cloud/seed/nocloud/meta-data"
    assert "seedfrom: {{.seed_url}}" in seed["environment"]["CONTENTS"]
    text = json.dumps(data)
    assert not re.search(r"/dev/(sd[a-z]|vd[a-z]|nvme\dn\dp?)\d", text)  # no partition number
    boot = data["tasks"][0]["actions"][2]
    assert boot["image"] == translate.KEXEC
    assert boot["environment"]["BLOCK_DEVICE"] == "/dev/disk/by-label/cloudimg-rootfs"
    rhel = translate.template_data(source(slug="almalinux-9", family="rhel", root_label="root",
                                          root_fstype="xfs"))
    assert rhel["tasks"][0]["actions"][2]["image"] == translate.WAITDAEMON
    assert rhel["tasks"][0]["actions"][1]["environment"]["FS_TYPE"] == "xfs"


def test_a_template_without_a_root_label_uses_the_partuuid_found_in_its_image() -> None:
    debian = source(slug="debian-12", family="debian", root_label="",
                    root_parttype="4f68bce3-e8cd-4db1-96e7-fbcaf984b709")
    # Before its image is stored (no partition GUID read from it yet): refused, with why.
    with pytest.raises(InvalidInput, match="found in the image once the image is stored"):
        translate.template(debian, NS, OWNER)
    guid = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"
    data = translate.template_data(replace(debian, root_partuuid=guid))
    seed, boot = data["tasks"][0]["actions"][1:]
    assert seed["environment"]["DEST_DISK"] == f"/dev/disk/by-partuuid/{guid}"
    assert boot["environment"]["BLOCK_DEVICE"] == f"/dev/disk/by-partuuid/{guid}"
    assert boot["environment"]["CMD_LINE"].startswith(f"root=PARTUUID={guid} ro")
    assert not re.search(r"/dev/(sd[a-z]|vd[a-z]|nvme\dn\dp?)\d", json.dumps(data))
    with pytest.raises(InvalidInput, match="iso"):
        translate.template(source(image_format="iso"), NS, OWNER)


def test_every_builtin_template_translates_and_validates() -> None:
    made = 0
    for tpl in BUILTIN:
        src = source(slug=tpl.slug, family=tpl.family, root_label=tpl.root_label,
                     root_parttype=tpl.root_parttype, root_fstype=tpl.root_fstype,
                     image_format="raw", kernel_args=tpl.kernel_args,
                     # without a label: the GUID the backend reads from the stored image
                     root_partuuid="" if tpl.root_label else str(uuid.uuid4()))
        obj = translate.template(src, NS, OWNER)
        both_accept(obj)
        root = "by-label" if tpl.root_label else "by-partuuid"
        assert f"/dev/disk/{root}/" in obj["spec"]["data"], tpl.slug
        made += 1
    assert made == len(BUILTIN) and {"debian-12", "rocky-9"} <= {t.slug for t in BUILTIN}


def test_deployment_as_workflow() -> None:
    m = machine()
    wf = Workflow(id="3f2a9c0d1e4b.0001861c2a3b4c5d", machine_id=m.id, template="ubuntu-24.04",
                  options={"disk": "serial:SN123"})
    obj = translate.workflow(wf, m, NS, OWNER, seed_url="http://10.0.0.1:3000/api/x/")
    both_accept(obj)
    assert obj["metadata"]["name"] == "df-3f2a9c0d1e4b.0001861c2a3b4c5d"
    assert obj["metadata"]["labels"][translate.WORKFLOW_LABEL] == wf.id
    spec = obj["spec"]
    assert (spec["templateRef"], spec["hardwareRef"]) == ("df-ubuntu-24.04", "df-3f2a9c0d1e4b")
    assert spec["hardwareMap"] == {"device_1": m.mac, "dest_disk": "/dev/vda",
                                   "instance_id": wf.id,
                                   "seed_url": "http://10.0.0.1:3000/api/x/"}
    assert spec["bootOptions"]["toggleAllowNetboot"] is True
    # The default disk is the first fixed one (not the CD drive); a /dev path is taken as is.
    wf.options = {"disk": ""}
    assert translate.workflow(wf, m, NS, OWNER, seed_url="http://x/")["spec"]["hardwareMap"][
        "dest_disk"] == "/dev/vda"
    wf.options = {"disk": "serial:NOPE"}
    with pytest.raises(InvalidInput, match="no disk with serial"):
        translate.workflow(wf, m, NS, OWNER, seed_url="http://x/")


def test_the_check_names_what_is_wrong() -> None:
    obj = translate.hardware(machine(), NS, OWNER, allow_pxe=True)
    obj["spec"]["interfaces"][0]["dhcp"]["mac"] = "not-a-mac"
    obj["spec"]["interfaces"][0]["netboot"]["allowPXE"] = "yes"
    obj["spec"]["colour"] = "blue"
    obj["metadata"]["name"] = "Bad_Name"
    found = schema.problems(obj)
    assert any(p.startswith("spec.interfaces[0].dhcp.mac: 'not-a-mac' does not match")
               for p in found)
    assert "spec.interfaces[0].netboot.allowPXE: must be boolean, not str" in found
    assert "spec.colour: unknown field (Tinkerbell would drop it)" in found
    assert any(p.startswith("metadata.name: 'Bad_Name'") for p in found)
    # The independent validator agrees on what the CRD itself says (type and pattern).
    assert len(list(VALIDATORS["Hardware"].iter_errors(obj))) >= 2
    wf = translate.workflow(Workflow(id="a.b", machine_id="m", template="t"), machine(), NS,
                            OWNER, seed_url="http://x/")
    wf["spec"]["bootOptions"]["bootMode"] = "floppy"
    assert any("bootMode: 'floppy' is not one of" in p for p in schema.problems(wf))
    with pytest.raises(InvalidInput, match="does not fit Tinkerbell's schema"):
        schema.validate(wf)


def test_k8s_names_and_steps() -> None:
    assert translate.k8s_name("df", "Ubuntu 24.04 LTS!") == "df-ubuntu-24.04-lts"
    assert translate.template_name("my_template") == "df-my-template"
