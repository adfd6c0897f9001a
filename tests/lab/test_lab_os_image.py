"""The Debian 12 deployment image (tests/lab/os_image.py): its files and layout.

That it boots under SeaBIOS and OVMF, runs cloud-init from the NoCloud seed Dragonfly writes,
grows its root and phones home is what tests/lab/test_lab_deploy.py proves end to end, after
a real deployment (booting it a second time here, without Dragonfly, cost CI minutes and
proved nothing more).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness import run
from tests.lab.os_image import (
    ESP_PART_TYPE,
    ROOT_PART_TYPE,
    OsImage,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def partitions(disk: Path) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(run("sfdisk", "--json", str(disk)).stdout)
    return table["partitiontable"]


def test_image_files_match_their_checksums(os_image: OsImage) -> None:
    """The cached files, their .sha256 files and SHA256SUMS agree; the layout is the one the
    deployment code relies on."""
    sums = os_image.sha256sums.read_text().splitlines()
    assert sums == [f"{os_image.raw_sha256}  {os_image.raw.name}",
                    f"{os_image.raw_xz_sha256}  {os_image.raw_xz.name}",
                    f"{os_image.qcow2_sha256}  {os_image.qcow2.name}"]
    for path, digest in ((os_image.raw, os_image.raw_sha256),
                         (os_image.raw_xz, os_image.raw_xz_sha256),
                         (os_image.qcow2, os_image.qcow2_sha256)):
        assert Path(f"{path}.sha256").read_text() == f"{digest}  {path.name}\n"
    check = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], text=True,
                           capture_output=True, timeout=120, cwd=os_image.directory,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    info = json.loads(run("qemu-img", "info", "--output=json", str(os_image.qcow2)).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == os_image.raw_bytes
    table = partitions(os_image.raw)
    assert [p["type"].lower() for p in table["partitions"]] == [
        "21686148-6449-6e6f-744e-656564454649", ESP_PART_TYPE, ROOT_PART_TYPE]
    assert os_image.esp_loader == "\\EFI\\BOOT\\BOOTX64.EFI"
