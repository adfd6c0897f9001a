"""Deployments end to end against real peers: `dragonfly serve` in the lab namespace beside the
site's dnsmasq, a QEMU guest (SeaBIOS, and separately OVMF) that PXE-boots into discovery, is
deployed from the API with a real Debian 12 image built offline (tests/lab/os_image.py), writes
it, reboots from its disk (a reboot under QEMU's -no-reboot is a new QEMU on the same disk,
network first), and whose cloud-init reads the seed Dragonfly wrote and phones home: only then
is the machine Installed. Afterwards the disk is inspected from the host. Under BIOS the
installed machine then gets a BMC (ipmi_sim whose chassis powers a guest with the same disk and
MAC) and is reimaged: one-time PXE and power on through IPMI, discovery boots again and the
agent takes up the new deployment, which is aborted before it writes (issue 8).

Also: a template whose checksum is wrong and a disk too small fail with their reasons and
nothing is reported installed; and `kill -9` of the server while the image is being written
loses nothing (the restarted server follows the same deployment to Installed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness import (
    BmcVm,
    DiscoveryImage,
    Guest,
    LabNet,
    Proc,
    QemuFactory,
    start_process,
)
from tests.lab.os_image import OsImage, loop_disk, mounted, sha256_file
from tests.lab.test_lab_e2e import Server as E2eServer
from tests.lab.test_lab_e2e import dragonfly

pytestmark = pytest.mark.lab

GiB = 1 << 30
HOSTNAME = "lab-web-1"
# Merged into the template's cloud-config as the operator's own part (deploy option user_data).
POWER_OFF = "#cloud-config\npower_state:\n  mode: poweroff\n  delay: now\n"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1c3l0ZXN0a2V5Zm9yZHJhZ29uZmx5bGFi lab@test"
# The reimage's BMC: ipmi_sim on an address of its own on the lab bridge (outside the site's
# DHCP range), and a password distinctive enough to be found if it leaked into a log.
BMC_ADDRESS = "10.99.0.61"
BMC_USER = "labadmin"
BMC_PASSWORD = "Lab-reimg-pass-4q8w"  # (IPMI: at most 20 bytes)


class Server(E2eServer):
    """The boot-edge lab test's server (``api`` GETs), which also POSTs."""

    def url(self, path: str) -> str:
        return f"http://{self.net.server_ip}:{self.port}{path}"

    def post(self, path: str, body: dict[str, Any]) -> Any:
        result = subprocess.run(
            self.net.exec_args("curl", "-s", "--max-time", "10", "-H",
                               f"Authorization: Bearer {self.token}", "-X", "POST", "-H",
                               "Content-Type: application/json", "-d", json.dumps(body),
                               self.url(path)),
            capture_output=True, text=True, timeout=20)
        if result.returncode != 0:
            raise AssertionError(f"POST {path} failed ({result.returncode}): {result.stderr}\n"
                                 f"server log:\n{self.proc.tail(60)}")
        return json.loads(result.stdout)

    def send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        """A JSON request whose body goes through stdin (a BMC password never on a command
        line); 200 expected."""
        result = subprocess.run(
            self.net.exec_args("curl", "-s", "--max-time", "60", "-X", method, "-H",
                               f"Authorization: Bearer {self.token}", "-H",
                               "Content-Type: application/json", "--data-binary", "@-",
                               "-w", "\n%{http_code}", self.url(path)),
            input=json.dumps(body), capture_output=True, text=True, timeout=75)
        text, _, status = result.stdout.rpartition("\n")
        if result.returncode != 0 or status.strip() != "200":
            raise AssertionError(f"{method} {path} -> {status} ({result.returncode}): {text}"
                                 f"{result.stderr}\nserver log:\n{self.proc.tail(60)}")
        return json.loads(text)


@pytest.fixture
def servers(lab_net: LabNet, tmp_path: Path, discovery_image: DiscoveryImage
            ) -> Iterator[Callable[..., Server]]:
    """``start()`` sets up an installation and serves it; ``start(again=server)`` serves the
    same state dir again (after a kill -9)."""
    started: list[Proc] = []
    # Agents heartbeat every 5 s here (30 by default), so a deployment starts sooner.
    env = {"DRAGONFLY_CONFIG": str(tmp_path / "none.toml"), "DRAGONFLY_AGENT_POLL_SECONDS": "5"}

    def start(again: Server | None = None) -> Server:
        state = tmp_path / "state"
        if again is None:
            discovery_image.install(state)
            dragonfly("user", "add", "admin", "--role", "admin", "--password-stdin",
                      "--state-dir", str(state), stdin="lab admin password\n", env=env)
            token = dragonfly("token", "create", "--user", "admin", "--name", "lab",
                              "--state-dir", str(state), env=env)
        else:
            token = again.token
        port = 3000 + os.getpid() % 1000
        args = lab_net.exec_args(
            "env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "dragonfly",
            "serve", "--state-dir", str(state), "--bind", lab_net.server_ip, "--port",
            str(port), "--boot-interface", "br0", "--dhcp-mode", "auto")
        proc = start_process("dragonfly", args, tmp_path / f"dragonfly-{len(started)}.log")
        started.append(proc)
        server = Server(lab_net, port, token, proc, state)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.alive(), f"dragonfly serve exited:\n{proc.tail()}"
            try:
                server.api("/api/version")
                return server
            except (AssertionError, json.JSONDecodeError):
                time.sleep(0.3)
        raise AssertionError(f"dragonfly serve did not answer:\n{proc.tail()}")

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
        for proc in started:
            assert "Traceback" not in proc.text(), proc.tail(80)


KERNEL_ARG = "dragonfly.lab=deployed"  # the template's kernel argument, seen on the console


def write_template(state: Path, slug: str, image: OsImage, *, fmt: str = "raw.zst",
                   checksum: str | None = None, timeout: int = 900) -> None:
    """A file template for the lab image: a local file, its checksum, its root locator, a
    kernel argument.

    ``fmt`` picks the file: ``raw.xz`` (the agent decompresses it while it writes), ``qcow2``
    (the server converts it to raw once; the agent writes raw), or ``raw.zst`` for tests that
    do not reach the write (cheapest to make)."""
    directory = state / "templates"
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "raw.xz":
        path, digest = image.raw_xz, image.raw_xz_sha256
    elif fmt == "qcow2":
        path, digest = image.qcow2, image.qcow2_sha256
    else:
        path, digest = zstd_image(image)
    (directory / f"{slug}.toml").write_text(
        f'name = "Lab Debian 12 ({slug})"\n'
        'family = "debian"\n'
        f'local_path = "{path}"\n'
        f'format = "{fmt}"\n'
        f'checksum = "sha256:{checksum or digest}"\n'
        f'root_label = "{image.root_part_label}"\n'
        f'root_parttype = "{image.root_part_type}"\n'
        'root_fstype = "ext4"\n'
        'uefi_loader = "\\\\EFI\\\\BOOT\\\\BOOTX64.EFI"\n'
        f'kernel_args = "{KERNEL_ARG}"\n'
        f"phone_home_timeout = {timeout}\n"
        f"image_bytes = {image.raw_bytes}\n")


def zstd_image(image: OsImage) -> tuple[Path, str]:
    """The raw image compressed with zstd, made once beside the cached image."""
    zst = image.raw.with_name(image.raw.name + ".zst")
    digest_file = zst.with_name(zst.name + ".sha256")
    if not digest_file.exists():
        part = zst.with_name(zst.name + ".part")
        subprocess.run(["zstd", "-q", "-f", "-T0", "-3", str(image.raw), "-o", str(part)],
                       check=True, timeout=300)
        part.rename(zst)
        digest_file.write_text(sha256_file(zst) + "\n")
    return zst, digest_file.read_text().strip()


def wait_for_machine(server: Server, guest: Guest, seconds: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in server.api("/api/machines?limit=100")["items"]:
            if item["mac"] == guest.mac:
                return dict(server.api(f"/api/machines/{item['id']}"))
        if guest.exited() is not None:
            raise AssertionError(f"{guest.name} stopped before checking in:\n"
                                 f"{guest.diagnostics()}\nserver:\n{server.proc.tail()}")
        time.sleep(2)
    raise AssertionError(f"{guest.mac} never checked in\n{guest.diagnostics()}\n"
                         f"server:\n{server.proc.tail()}")


def workflow_of(server: Server, machine_id: str) -> dict[str, Any]:
    machine = server.api(f"/api/machines/{machine_id}")
    return dict(server.api(f"/api/workflows/{machine['workflow_id']}"))


def wait_until(what: str, check: Callable[[], Any], seconds: float, guest: Guest,
               server: Server, machine_id: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    workflow = workflow_of(server, machine_id)
    raise AssertionError(f"{what} did not happen within {seconds} s\n"
                         f"workflow: {json.dumps(workflow, indent=1)[:6000]}\n"
                         f"{guest.diagnostics(80)}\nserver:\n{server.proc.tail(60)}")


def agent_deploys_and_reboots(server: Server, guest: Guest, machine_id: str,
                              seconds: float = 900) -> dict[str, Any]:
    """The agent writes the image and reboots: QEMU (-no-reboot) exits."""
    def exited() -> bool:
        workflow = workflow_of(server, machine_id)
        if workflow["state"] == "failed":
            raise AssertionError(f"deployment failed: {workflow['error']}\n"
                                 f"{json.dumps(workflow['actions'], indent=1)[:6000]}\n"
                                 f"{guest.diagnostics(80)}")
        return guest.exited() is not None
    wait_until("the agent's reboot", exited, seconds, guest, server, machine_id)
    return workflow_of(server, machine_id)


def inspect_disk(disk: Path, tmp_path: Path, instance_id: str) -> dict[str, Any]:
    """The deployed disk, read from the host: GPT sanity, the root partition, what the first
    boot left on it (hostname, host keys, cloud-init's result, the grown filesystem)."""
    verify = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    table = subprocess.run(["sgdisk", "-p", str(disk)], capture_output=True, text=True,
                           check=True).stdout
    with loop_disk(disk) as loop:
        mount = tmp_path / "inspect"
        with mounted(loop.partition(3), mount):
            hostname = (mount / "etc/hostname").read_text().strip()
            grub_cmdline = (mount / "etc/default/grub").read_text().strip()
            keys = {p.name: p.read_text().strip()
                    for p in (mount / "etc/ssh").glob("ssh_host_*_key.pub")}
            seed = sorted(p.name for p in (mount / "var/lib/cloud/seed/nocloud").iterdir())
            # (/var/lib/cloud/instance is an absolute symlink: follow it by hand)
            finished = (mount / "var/lib/cloud/instances" / instance_id
                        / "boot-finished").exists()
            result_file = mount / "var/lib/cloud/data/result.json"
            result = json.loads(result_file.read_text()) if result_file.exists() else None
            fs = os.statvfs(mount)
            fs_bytes = fs.f_blocks * fs.f_frsize
    return {"verify": verify.stdout + verify.stderr, "table": table, "hostname": hostname,
            "keys": keys, "seed": seed, "boot_finished": finished, "result": result,
            "grub_cmdline": grub_cmdline,
            "fs_bytes": fs_bytes}


def last_sector_of_root(table: str) -> tuple[int, int]:
    """(root partition's last sector, the disk's last usable sector) from sgdisk -p."""
    usable = int(table.split("last usable sector is ")[1].split()[0])
    row = next(line for line in table.splitlines() if line.strip().startswith("3 "))
    return int(row.split()[2]), usable


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_deploy_debian_onto_a_vm(firmware: str, servers: Callable[..., Server],
                                 site_dhcp: Callable[..., Proc], qemu: QemuFactory,
                                 bmc_vm: Callable[..., BmcVm], os_image: OsImage,
                                 tmp_path: Path) -> None:
    site_dhcp()
    # Both of the formats: qcow2 under BIOS (converted to raw by the server, written
    # raw), raw.xz under UEFI (decompressed by the agent while it writes).
    fmt = "qcow2" if firmware == "bios" else "raw.xz"
    write_template(tmp_path / "state", "lab-debian", os_image, fmt=fmt)
    server = servers()
    mac = "52:54:00:d9:10:01" if firmware == "bios" else "52:54:00:d9:10:02"
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as fh:
        fh.truncate(3 * GiB)  # larger than the 1 GiB image: the GPT and root must grow
    guest = qemu.start("discovery", mac, firmware=firmware, disk=disk, memory_mib=1024,
                       seconds=1200)
    machine = wait_for_machine(server, guest)
    server.post(f"/api/machines/{machine['id']}/actions/adopt", {})
    started = time.monotonic()
    answer = server.post(f"/api/machines/{machine['id']}/actions/deploy", {
        "template": "lab-debian", "options": {"hostname": HOSTNAME, "ssh_keys": [SSH_KEY],
                                              "user_data": POWER_OFF}})
    assert answer["state"] == "deploying", answer

    kill9 = firmware == "bios"  # once: kill -9 the server while the image is being written
    if kill9:
        def streaming() -> bool:
            stream = next(a for a in workflow_of(server, machine["id"])["actions"]
                          if a["name"] == "stream-image")
            return bool(stream["state"] == "running" and stream["bytes_done"] > 0)
        wait_until("streaming", streaming, 600, guest, server, machine["id"])
        os.killpg(server.proc.popen.pid, signal.SIGKILL)
        server.proc.popen.wait(10)
        time.sleep(3)  # the agent's reports fail meanwhile: it must retry, not give up
        server = servers(again=server)

    workflow = agent_deploys_and_reboots(server, guest, machine["id"])
    written = time.monotonic()
    names = {a["name"]: a for a in workflow["actions"]}
    for step in ("select-disk", "wipe", "stream-image", "verify", "fix-gpt", "write-seed",
                 "boot-entry", "reboot"):
        assert names[step]["state"] == "succeeded", (step, names[step])
    assert names["select-disk"]["result"]["disk"] == "/dev/vda"
    assert names["stream-image"]["bytes_total"] == os_image.raw_bytes
    assert workflow["image"]["format"] == ("raw" if fmt == "qcow2" else "xz"), workflow["image"]
    assert names["write-seed"]["result"]["kernel_args"] == KERNEL_ARG
    assert workflow["written_at"] and workflow["rebooted_at"]
    assert server.api(f"/api/machines/{machine['id']}")["state"] == "deploying"
    # The image is on the disk and the iPXE script now boots it: a network-first reboot.
    script = subprocess.run(lab_net_curl(server, f"/boot/{mac}.ipxe"), capture_output=True,
                            text=True, timeout=20).stdout
    assert "booting the local disk" in script, script

    # The same machine powered on again: its disk, network first under BIOS (the iPXE script
    # boots the disk). Under UEFI its NVRAM decides, as firmware does: the agent's entry is
    # last in BootOrder, after the network, and BootNext. (QEMU's own boot order would
    # override NVRAM on every boot; with it, OVMF tries its PXEv6 and HTTP entries after
    # iPXE leaves, which takes minutes under emulation.)
    uefi = firmware == "uefi"
    booted = qemu.start("installed", mac, firmware=firmware, disk=disk, memory_mib=1024,
                        seconds=900, nvram=guest.workdir / "OVMF_VARS.fd" if uefi else None,
                        network_first=not uefi)

    def installed() -> bool:
        return bool(server.api(f"/api/machines/{machine['id']}")["state"] == "installed")
    wait_until("the phone-home", installed, 600, booted, server, machine["id"])
    done = time.monotonic()
    final = workflow_of(server, machine["id"])
    assert final["state"] == "succeeded"
    assert final["installed"]["hostname"] == HOSTNAME
    posted = final["installed"]["host_keys"]
    assert posted.get("pub_key_ed25519", "").startswith("ssh-ed25519 ")
    steps = [s["step"] for s in server.api(f"/api/boot/{mac}")["steps"]]
    assert steps.count("kernel") == 1, steps  # the discovery kernel once: never re-entered
    if not uefi:  # the network-first reboot asked for its script, which booted the disk
        assert steps.count("ipxe_script") >= 2, steps

    # The operator's user-data powers it off after the phone-home: a clean shutdown, so
    # what the OS wrote (host keys, hostname) is on the disk when the host reads it.
    deadline = time.monotonic() + 180
    while booted.exited() is None and time.monotonic() < deadline:
        time.sleep(2)
    assert booted.exited() == 0, booted.diagnostics()
    facts = inspect_disk(disk, tmp_path, final["id"])
    assert "No problems found" in facts["verify"], facts["verify"]
    root_end, usable = last_sector_of_root(facts["table"])
    assert usable - root_end < 2048, facts["table"]  # the root partition fills the disk
    root_start = int(next(line for line in facts["table"].splitlines()
                          if line.strip().startswith("3 ")).split()[1])
    assert facts["fs_bytes"] > 0.95 * (root_end - root_start + 1) * 512  # and its filesystem
    assert facts["boot_finished"], "cloud-init did not finish the deployment's instance"
    assert facts["result"] is not None and facts["result"]["v1"]["errors"] == [], \
        facts["result"]
    assert facts["result"]["v1"]["datasource"].startswith("DataSourceNoCloud")
    assert facts["hostname"] == HOSTNAME
    assert facts["seed"] == ["meta-data", "network-config", "user-data"]
    # The template's kernel argument reached the installed kernel (it prints its command
    # line on the serial console), and stays in GRUB's settings for later kernels.
    command_lines = [line for line in booted.serial.splitlines() if "Command line:" in line]
    assert command_lines and KERNEL_ARG in command_lines[0], command_lines or booted.serial[-3000:]
    assert facts["grub_cmdline"].endswith(f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {KERNEL_ARG}"')
    on_disk = facts["keys"]["ssh_host_ed25519_key.pub"].split()[:2]
    assert posted["pub_key_ed25519"].split()[:2] == on_disk
    print(f"\n{firmware}: PXE to image written and rebooted {written - started:.0f} s, "
          f"reboot to phone-home {done - written:.0f} s"
          + (" (server killed with -9 while writing, restarted)" if kill9 else ""))
    if not uefi:  # once: the installed machine reimaged unattended through its BMC (issue 8)
        reimage_through_the_bmc(server, bmc_vm, machine["id"], mac, disk, final["id"],
                                tmp_path)


def reimage_through_the_bmc(server: Server, bmc_vm: Callable[..., BmcVm], machine_id: str,
                            mac: str, disk: Path, first: str, tmp_path: Path) -> None:
    """The installed machine (off: its OS powered it off) gets a BMC: ipmi_sim whose chassis
    powers a guest with the same MAC and disk, BIOS, network first. ``reimage`` sets one-time
    PXE and powers it on through IPMI; as the machine is Deploying, its iPXE script boots
    discovery again and the agent picks up the new deployment, which is then aborted before
    it writes anything: the machine ends Failed with the abort's reason."""
    started = time.monotonic()
    bmc = bmc_vm(BMC_ADDRESS, mac, user=BMC_USER, password=BMC_PASSWORD, disk=disk,
                 memory_mib=1024, seconds=600)
    assert bmc.power_status() == "off" and not bmc.guest.running()
    record = server.send("PUT", f"/api/machines/{machine_id}/bmc", {
        "driver": "ipmi", "address": BMC_ADDRESS, "port": 623, "user": BMC_USER,
        "password": BMC_PASSWORD})
    assert record["address"] == BMC_ADDRESS and record["has_password"] is True, record
    assert "password" not in record
    assert server.api(f"/api/machines/{machine_id}/bmc")["configured"] is True

    answer = server.send("POST", f"/api/machines/{machine_id}/actions/reimage",
                         {"template": "lab-debian"})
    asked = time.monotonic()
    assert answer["state"] == "deploying", answer
    assert answer["bmc_boot"] == {"attempted": True, "ok": True, "ops": ["boot_pxe", "on"],
                                  "error": ""}, answer["bmc_boot"]
    second = answer["workflow_id"]
    assert second and second != first, (first, second)
    # Through IPMI: the one-time PXE first, then power on (it was off); the chassis started it.
    chassis = bmc.guest.chassis_log
    assert "set boot pxe" in chassis and "set power 1" in chassis, chassis
    assert chassis.index("set boot pxe") < chassis.index("set power 1"), chassis
    assert "starting the guest (boot device: pxe)" in chassis, chassis
    assert bmc.guest.power_ons() == 1
    history = server.api(f"/api/machines/{machine_id}/history?limit=50")
    assert any(e["kind"] == "power" and e["message"] == "Reimage: one-time network boot and "
               "on through the BMC" for e in history), [e["message"] for e in history]
    # Deploying, nothing written yet: its network boot is discovery again, not the disk.
    script = subprocess.run(lab_net_curl(server, f"/boot/{mac}.ipxe"), capture_output=True,
                            text=True, timeout=20).stdout
    assert "booting the local disk" not in script, script

    def explain() -> str:
        return f"{bmc.guest.diagnostics(80)}\nserver:\n{server.proc.tail(60)}"

    def until(what: str, check: Callable[[], Any], seconds: float, every: float = 2) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            assert bmc.guest.running(), f"the guest stopped: {what}\n{explain()}"
            time.sleep(every)
        raise AssertionError(f"{what} did not happen within {seconds} s\n{explain()}")

    def discovery_again() -> bool:
        steps = [s["step"] for s in server.api(f"/api/boot/{mac}")["steps"]]
        return steps.count("kernel") == 2  # the first deployment's discovery, and this one
    until("the second discovery boot", discovery_again, 300)
    booted = time.monotonic()

    def picked_up() -> dict[str, Any] | None:
        workflow = dict(server.api(f"/api/workflows/{second}"))
        assert workflow["state"] == "running", workflow
        names = {a["name"]: a for a in workflow["actions"]}
        busy = names["select-disk"]["state"] in ("running", "succeeded")
        return workflow if busy else None
    # (polled often: the agent goes on to wipe and stream at once, and the abort should
    # come before the image is streamed again)
    until("the agent's select-disk on the new deployment", picked_up, 240, every=0.3)
    picked = time.monotonic()

    aborted = server.send("POST", f"/api/workflows/{second}/abort", {})
    assert aborted["state"] == "failed", aborted
    assert ": aborted by admin" in aborted["error"], aborted["error"]  # "... (token <id>)"
    machine = server.api(f"/api/machines/{machine_id}")
    assert machine["state"] == "failed", machine
    assert machine["state_reason"] == aborted["error"], (machine["state_reason"], aborted)
    stream = next(a for a in aborted["actions"] if a["name"] == "stream-image")
    assert stream["state"] != "succeeded", stream  # the image was not written a second time
    assert bmc.guest.running()  # the agent went back to waiting; teardown kills the guest
    bmc.stop()
    assert not bmc.guest.running(), bmc.guest.diagnostics()
    for log in sorted(tmp_path.rglob("*.log")):
        assert BMC_PASSWORD.encode() not in log.read_bytes(), f"the BMC password is in {log}"
    print(f"reimage through the BMC: power on to the discovery kernel fetched "
          f"{booted - asked:.0f} s, to the agent's select-disk {picked - asked:.0f} s, all "
          f"(BMC start to abort) "
          f"{time.monotonic() - started:.0f} s: {machine['state_reason']} "
          f"({stream['bytes_done']} bytes streamed)")


def lab_net_curl(server: Server, path: str) -> list[str]:
    return server.net.exec_args("curl", "-s", "--max-time", "10", server.url(path))


@pytest.mark.timeout(900)
def test_bad_checksum_and_a_disk_too_small_fail_with_their_reasons(
        servers: Callable[..., Server], site_dhcp: Callable[..., Proc], qemu: QemuFactory,
        os_image: OsImage, tmp_path: Path) -> None:
    site_dhcp()
    write_template(tmp_path / "state", "lab-debian", os_image)
    write_template(tmp_path / "state", "lab-corrupt", os_image, checksum="0" * 64)
    server = servers()
    guest = qemu.start("small", "52:54:00:d9:10:03", firmware="bios", disk_bytes=GiB // 2,
                       memory_mib=512, seconds=600)
    machine = wait_for_machine(server, guest)
    server.post(f"/api/machines/{machine['id']}/actions/adopt", {})

    server.post(f"/api/machines/{machine['id']}/actions/deploy", {"template": "lab-corrupt"})

    def failed() -> dict[str, Any] | None:
        current = server.api(f"/api/machines/{machine['id']}")
        return current if current["state"] == "failed" else None
    bad = wait_until("the checksum refusal", failed, 120, guest, server, machine["id"])
    assert "checksum mismatch" in bad["state_reason"], bad["state_reason"]
    assert bad["state_reason"].startswith("Fetch and verify the image: ")

    # The agent still waits in discovery: deploying again reaches it, and the disk it was
    # told to use is refused with both sizes.
    server.post(f"/api/machines/{machine['id']}/actions/deploy", {
        "template": "lab-debian", "options": {"disk": "/dev/vda"}})

    def refused() -> dict[str, Any] | None:
        current = server.api(f"/api/machines/{machine['id']}")
        return current if current["state"] == "failed" \
            and current["state_reason"].startswith("Choose") else None
    small = wait_until("the disk refusal", refused, 300, guest, server, machine["id"])
    assert small["state_reason"] == ("Choose the target disk: disk /dev/vda (512 MiB) is "
                                     "smaller than the image (1 GiB)"), small["state_reason"]
    assert all(w["state"] != "succeeded"
               for w in server.api(f"/api/machines/{machine['id']}/workflows"))
    assert guest.exited() is None  # nothing rebooted: the agent went back to waiting
