"""A Simple-mode install through the real HTTP routes, the real store, image store and
fleet: the per-MAC iPXE script boots the installer (files from the image store), the answer
file is served once and only to its machine, the installer's reports become stages, ``done``
switches the script to the disk, the first boot marks it Installed, and silence after the
answer file fails it with the last stage. The installer itself is played by HTTP calls here;
tests/lab/test_lab_simple.py has Debian's real one."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from dragonfly.context import CTX, AppContext
from dragonfly.domain.model import Machine, State, WorkflowState, new_id
from dragonfly.edge import routes as edge_routes
from dragonfly.errors import InvalidInput
from dragonfly.http.errors import error_middleware
from dragonfly.images import ImageStore
from dragonfly.images import routes as image_routes
from dragonfly.simple import boot_routes
from dragonfly.simple.engine import SESSION, SimpleInstaller
from dragonfly.simple.installers import INSTALLERS, InstallerFile, installer_for
from dragonfly.simple.runner import ModeRunner
from dragonfly.templates.registry import TemplateCatalog
from dragonfly.workflow import routes as workflow_routes
from tests.lab.harness import make_context
from tests.test_simple_answers import KEY

MAC = "52:54:00:5e:00:01"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def mode_of(value: str) -> Any:
    async def mode() -> str:
        return value
    return mode


class NoNative:
    async def start_deployment(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError("the image engine must not be used for an installer method")


@pytest.fixture
async def world(aiohttp_client: Any, tmp_path: Path) -> tuple[TestClient, AppContext, Clock]:
    clock = Clock()
    ctx = make_context(tmp_path / "state")
    ctx.images = ImageStore(ctx.store, tmp_path / "state")
    ctx.templates = TemplateCatalog(ctx.store, None)
    ctx.simple = SimpleInstaller(ctx.fleet, ctx.store, ctx.templates, ctx.images, clock=clock,
                                 tick=3600)
    ctx.runner = ModeRunner(NoNative(), ctx.simple, mode_of("simple"))  # type: ignore[arg-type]
    app = web.Application(middlewares=[error_middleware])
    app[CTX] = ctx
    for module in (edge_routes, boot_routes, image_routes, workflow_routes):
        for route in module.api.routes:
            app.router.add_route(route.method, route.path, route.handler)

    async def lifecycle(app: web.Application) -> Any:
        await ctx.store.open()
        await ctx.fleet.start()
        await ctx.images.start()  # type: ignore[union-attr]
        await ctx.templates.start()  # type: ignore[union-attr]
        await ctx.simple.start()  # type: ignore[union-attr]
        yield
        await ctx.simple.stop()  # type: ignore[union-attr]
        await ctx.images.stop()  # type: ignore[union-attr]
        ctx.fleet.stop()
        await ctx.store.close()

    app.cleanup_ctx.append(lifecycle)
    client = await aiohttp_client(app)
    # The installer files, imported offline (stand-ins of a kernel and an initrd: bytes the
    # image store keeps and serves; the lab test imports Debian's real ones).
    for role, body in (("kernel", b"K" * 4096), ("initrd", b"I" * 8192)):
        path = tmp_path / role
        path.write_bytes(body)
        for slug in ("debian-12", "rocky-9", "ubuntu-24.04"):
            await ctx.images.import_file(path, template=installer_for(slug).image_key(role))
    return client, ctx, clock


async def _machine(ctx: AppContext, mac: str = MAC) -> Machine:
    return await ctx.fleet.add_machine(Machine(id=new_id(), name="web-07", state=State.READY,
                                               mac=mac, macs=[mac]))


async def _start(ctx: AppContext, machine: Machine, slug: str = "debian-12",
                 **options: Any) -> str:
    assert ctx.runner is not None and ctx.simple is not None
    wf = await ctx.runner.start_deployment(machine, "deploy", slug, "tester",
                                           {"ssh_keys": [KEY], **options})
    assert wf.engine == "simple"
    for task in list(ctx.simple._preparing.values()):
        await task
    return wf.id


async def _text(client: TestClient, url: str, status: int = 200, **kw: Any) -> str:
    response = await client.get(url, **kw)
    text = await response.text()
    assert response.status == status, text
    return text


async def test_a_debian_install_from_script_to_installed(world: Any) -> None:
    client, ctx, clock = world
    machine = await _machine(ctx)
    wf_id = await _start(ctx, machine, domain="lab.example")
    wf = ctx.fleet.get_machine(machine.id)
    assert wf.state is State.DEPLOYING

    script = await _text(client, f"/boot/{MAC}.ipxe")
    digests = re.findall(r"/images/([0-9a-f]{64})", script)
    assert len(digests) == 2
    for digest in digests:  # the image store serves both files
        assert await _text(client, f"/images/{digest}")
    line = next(x for x in script.splitlines() if x.startswith("kernel "))
    assert "auto=true priority=critical" in line
    assert "netcfg/get_hostname=web-07 netcfg/get_domain=lab.example" in line
    assert "netcfg/no_default_route=true" in line  # an isolated network: do not stop to ask
    answer_url = re.search(r"url=(\S+)", line).group(1)  # type: ignore[union-attr]
    path = answer_url.split("://", 1)[1].split("/", 1)[1]
    assert path.startswith(f"simple/answers/{MAC}/") and path.endswith("/preseed.cfg")

    # Not to another MAC, not with another token; then once, and never again.
    await _text(client, "/" + path.replace(MAC, "52:54:00:5e:00:99"), 404)
    await _text(client, "/" + re.sub(r"/answers/([^/]+)/[^/]+/", r"/answers/\1/nope/", path),
                404)
    preseed = await _text(client, "/" + path)
    assert "d-i passwd/username string admin" in preseed
    assert "d-i netcfg/get_domain string lab.example" in preseed
    await _text(client, "/" + path, 409)
    callback = re.search(r"'(\S+)/stage/preseed-loaded'", preseed).group(1)  # type: ignore[union-attr]
    cb = "/" + callback.split("://", 1)[1].split("/", 1)[1]

    # Stages, as the preseed's commands report them.
    await _text(client, f"{cb}/stage/preseed-loaded")
    await _text(client, f"{cb}/stage/partitioning")
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.stage == "partitioning"
    assert [a["state"] for a in wf.actions] == ["succeeded", "succeeded", "running", "pending"]
    assert "preseed-loaded" in wf.actions[2]["log"] and "partitioning" in wf.actions[2]["log"]
    history = [h.message for h in await ctx.fleet.history(machine.id)]
    assert "Installer: partitioning" in history and "Installer: answer-file-fetched" in history
    # Until done, the machine's next boot is the installer again (the answer is spent, so a
    # reinstall from scratch needs a new deployment; the script is still the installer's).
    assert "kernel " in await _text(client, f"/boot/{MAC}.ipxe")

    await _text(client, f"{cb}/done")
    assert "sanboot" in await _text(client, f"/boot/{MAC}.ipxe")  # its disk from now on
    assert ctx.fleet.get_machine(machine.id).state is State.DEPLOYING
    await _text(client, f"{cb}/booted")
    m = ctx.fleet.get_machine(machine.id)
    assert m.state is State.INSTALLED and m.os == "debian-12"
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.SUCCEEDED and wf.installed
    # The progress address closes with the install.
    await _text(client, f"{cb}/stage/late", 404)


async def test_silence_after_the_answer_file_fails_with_the_last_stage(world: Any) -> None:
    client, ctx, clock = world
    machine = await _machine(ctx)
    wf_id = await _start(ctx, machine)
    await ctx.simple.check_deadlines()  # booted nothing yet: no deadline
    script = await _text(client, f"/boot/{MAC}.ipxe")
    path = "/" + re.search(r"url=\S+?://[^/]+/(\S+)", script).group(1)  # type: ignore[union-attr]
    preseed = await _text(client, path)
    cb = "/" + re.search(r"'\S+?://[^/]+/(\S+)/stage/preseed-loaded'",  # type: ignore[union-attr]
                         preseed).group(1)
    await _text(client, f"{cb}/stage/preseed-loaded")
    clock.now += 29 * 60
    await ctx.simple.check_deadlines()
    assert (await ctx.fleet.get_workflow(wf_id)).active
    clock.now += 2 * 60  # the template's phone_home_timeout: 30 min
    await ctx.simple.check_deadlines()
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.FAILED
    assert "last stage reached was preseed-loaded" in wf.error
    m = ctx.fleet.get_machine(machine.id)
    assert m.state is State.FAILED and "preseed-loaded" in m.state_reason
    # A failed machine boots discovery, not the installer: no install loop.
    assert "discovery" in await _text(client, f"/boot/{MAC}.ipxe")


async def test_kickstart_checks_anacondas_mac_headers_and_onerror_fails(world: Any) -> None:
    client, ctx, _ = world
    machine = await _machine(ctx)
    wf_id = await _start(ctx, machine, "rocky-9")
    script = await _text(client, f"/boot/{MAC}.ipxe")
    line = next(x for x in script.splitlines() if x.startswith("kernel "))
    assert "inst.repo=https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os/" in line
    assert "inst.ks.sendmac" in line
    path = "/" + re.search(r"inst\.ks=\S+?://[^/]+/(\S+)", line).group(1)  # type: ignore[union-attr]
    await _text(client, path, 404,
                headers={"X-RHN-Provisioning-MAC-0": "eth0 52:54:00:5e:00:77"})
    kickstart = await _text(client, path,
                            headers={"X-RHN-Provisioning-MAC-0": f"eth0 {MAC}"})
    assert kickstart.startswith("# Kickstart generated by Dragonfly")
    cb = "/" + re.search(r"'\S+?://[^/]+/(\S+)/failed'", kickstart).group(1)  # type: ignore[union-attr]
    await _text(client, f"{cb}/stage/pre")
    await _text(client, f"{cb}/failed")
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.FAILED and "last stage: pre" in wf.error


async def test_subiquity_webhook_events_become_stages(world: Any) -> None:
    client, ctx, _ = world
    machine = await _machine(ctx)
    wf_id = await _start(ctx, machine, "ubuntu-24.04")
    script = await _text(client, f"/boot/{MAC}.ipxe")
    seed = re.search(r"ds=nocloud-net;s=\S+?://[^/]+/(\S+)/ ", script).group(1)  # type: ignore[union-attr]
    assert "autoinstall" in script and "url=https://releases.ubuntu.com/24.04/" in script
    assert await _text(client, f"/{seed}/meta-data") == f"instance-id: dragonfly-{wf_id}\n"
    user_data = yaml.safe_load(await _text(client, f"/{seed}/user-data"))
    endpoint = user_data["autoinstall"]["reporting"]["dragonfly"]["endpoint"]
    events = "/" + endpoint.split("://", 1)[1].split("/", 1)[1]
    for body in ({"name": "subiquity/Network/apply", "event_type": "start",
                  "origin": "curtin"},
                 {"name": "subiquity/Install/install/curtin_install/running", "event_type":
                  "start"},  # too deep: not a stage
                 {"name": "subiquity/Network/apply", "event_type": "finish",
                  "result": "SUCCESS"}):
        response = await client.post(events, json=body)
        assert response.status == 200, await response.text()
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.stage == "subiquity/Network/apply" and "curtin_install" not in wf.actions[2]["log"]
    response = await client.post(events, json={"name": "subiquity/Install", "event_type":
                                                "finish", "result": "FAIL",
                                                "description": "disk not found"})
    assert response.status == 200
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.FAILED and "disk not found" in wf.error
    response = await client.post(events, data=b"not json")
    assert response.status in (400, 404)  # ended: the address is closed (or refused)


async def test_a_deployment_picks_its_engine_by_method_and_mode(world: Any) -> None:
    _, ctx, _ = world
    runner: ModeRunner = ctx.runner
    assert await runner.method("debian-12", {}) == "installer"  # server.mode = simple
    assert await runner.method("debian-12", {"method": "image"}) == "image"
    runner.mode = mode_of("native")
    assert await runner.method("debian-12", {}) == "image"
    assert await runner.method("debian-12", {"method": "installer"}) == "installer"
    with pytest.raises(InvalidInput, match="method"):
        await runner.method("debian-12", {"method": "magic"})
    machine = await _machine(ctx, "52:54:00:5e:00:02")
    with pytest.raises(InvalidInput, match="ssh_keys or a password_hash"):
        await ctx.simple.start_deployment(machine, "deploy", "debian-12", "t", {})
    assert ctx.fleet.get_machine(machine.id).state is State.READY  # refused before starting


async def test_missing_installer_files_fail_the_first_step(
        world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, ctx, _ = world
    machine = await _machine(ctx)
    # almalinux-9's files were never imported; its download goes to a closed local port
    # (nothing leaves this machine): the install fails at its first step with the reason.
    local = dataclasses.replace(installer_for("almalinux-9"), files=(
        InstallerFile("kernel", "http://127.0.0.1:9/vmlinuz", "http://127.0.0.1:9/SHA256SUMS",
                      "./vmlinuz"),
        InstallerFile("initrd", "http://127.0.0.1:9/initrd.img",
                      "http://127.0.0.1:9/SHA256SUMS", "./initrd.img")))
    monkeypatch.setitem(INSTALLERS, "almalinux-9", local)
    ctx.images.attempts = 1
    ctx.images.retry_delay = 0.0
    wf_id = await _start(ctx, machine, "almalinux-9")
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.FAILED and wf.failed_action == "prepare-installer"
    assert wf.error.startswith("Installer files: ") and "127.0.0.1:9" in wf.error
    assert ctx.fleet.get_machine(machine.id).state is State.FAILED
    assert (await ctx.store.get(SESSION, wf_id)) is not None


async def test_installer_files_nothing_can_check_are_not_downloaded(world: Any) -> None:
    """Ubuntu's loose netboot kernel and initrd are in no checksum file: without an offline
    import the install fails at its first step and says what to run, and nothing is fetched."""
    client, ctx, _ = world
    machine = await _machine(ctx)
    wf_id = await _start(ctx, machine, "ubuntu-22.04")  # its files were never imported
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.FAILED and wf.failed_action == "prepare-installer"
    assert "has no checksum file to be checked against, so it is not downloaded" in wf.error
    assert "--template installer:ubuntu-22.04:kernel" in wf.error, wf.error
    assert [i for i in await ctx.images.list() if "ubuntu-22.04" in str(i.templates)] == []


async def test_abort_an_install(world: Any) -> None:
    _, ctx, _ = world
    machine = await _machine(ctx)
    wf_id = await _start(ctx, machine)
    wf = await ctx.simple.abort(wf_id, "alice")
    assert wf.state is WorkflowState.FAILED and "aborted by alice" in wf.error
    assert wf.failed_action == "boot-installer"


def test_the_first_boot_unit_is_what_the_shell_writes(tmp_path: Path) -> None:
    """The unit's lines go through one shell command line: run it, read the file back."""
    from dragonfly.simple.render import render_answer
    from dragonfly.simple.spec import build_spec, first_boot_unit
    from tests.test_simple_answers import machine

    spec = build_spec(machine(), "ubuntu", "24.04", {"ssh_keys": [KEY]},
                      callback="http://10.0.0.1:3000/simple/progress/m/t")
    doc = yaml.safe_load(render_answer(spec))
    command = doc["autoinstall"]["late-commands"][0].replace("/target", str(tmp_path))
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    subprocess.run(["sh", "-c", command], check=True, timeout=10)
    written = (tmp_path / "etc/systemd/system/dragonfly-first-boot.service").read_text()
    assert written == "\n".join(first_boot_unit("http://10.0.0.1:3000/simple/progress/m/t")) \
        + "\n"
    assert "ExecStart=/bin/sh -c 'wget -q -O /dev/null http://10.0.0.1:3000/simple/" \
        "progress/m/t/booted ||" in written


async def test_the_server_wires_simple_mode_and_follows_the_wizards_choice(
        tmp_path: Path) -> None:
    from dragonfly.auth.settings import SETTING
    from dragonfly.compose import server_context
    from dragonfly.config import Config

    config = Config.load(None, env={}, overrides={"server.state_dir": str(tmp_path)})
    ctx = server_context(config)
    await ctx.store.open()
    try:
        assert ctx.simple is not None and ctx.simple in ctx.services
        assert ctx.identity is not None  # dns.enabled by default
        runner = ctx.runner
        assert isinstance(runner, ModeRunner)
        assert await runner.method("debian-12", {}) == "image"  # native by default
        # The first-run wizard stores its mode choice as a setting: it takes effect.
        await ctx.store.put(SETTING, "server.mode", {"value": "simple"})
        assert await runner.method("debian-12", {}) == "installer"
        assert await runner.method("custom-os", {}) == "image"  # no installer for it
    finally:
        await ctx.store.close()


async def test_site_mirrors_per_template_and_family(world: Any) -> None:
    client, ctx, _ = world
    ctx.simple.mirrors = {"debian": "http://mirror.site/debian",
                          "rocky-9": "http://mirror.site/rocky/9/os/"}
    machine = await _machine(ctx)
    await _start(ctx, machine, "rocky-9")
    line = next(x for x in (await _text(client, f"/boot/{MAC}.ipxe")).splitlines()
                if x.startswith("kernel "))
    assert "inst.repo=http://mirror.site/rocky/9/os/ " in line
    path = "/" + re.search(r"inst\.ks=\S+?://[^/]+/(\S+)", line).group(1)  # type: ignore[union-attr]
    assert "url --url=http://mirror.site/rocky/9/os/" in await _text(client, path)
    assert ctx.simple.mirror_for("debian-13", "debian") == "http://mirror.site/debian"
    # A deployment's own mirror wins over the site's.
    other = await _machine(ctx, "52:54:00:5e:00:03")
    await _start(ctx, other, "debian-12", mirror="http://apt.team/debian")
    script = await _text(client, "/boot/52:54:00:5e:00:03.ipxe")
    preseed = await _text(client, "/" + re.search(  # type: ignore[union-attr]
        r"url=\S+?://[^/]+/(\S+)", script).group(1))
    assert "d-i mirror/http/hostname string apt.team" in preseed


def test_site_mirrors_setting_is_validated() -> None:
    from dragonfly.config import Config

    config = Config.load(None, env={"DRAGONFLY_SIMPLE_MIRRORS": "debian=http://m/debian"})
    assert config["simple.mirrors"] == ["debian=http://m/debian"]
    with pytest.raises(InvalidInput, match="simple.mirrors"):
        Config.load(None, env={"DRAGONFLY_SIMPLE_MIRRORS": "debian:ftp://m"})


async def _mirror(aiohttp_server: Any, files: dict[str, bytes]) -> str:
    """A real HTTP server on loopback playing a distribution mirror: ``files`` by path (read
    at each request, so a test can change them), 404 for any other; its root URL."""

    async def serve(request: web.Request) -> web.Response:
        body = files.get(request.path)
        return web.Response(body=body) if body is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    mirror = await aiohttp_server(app)
    return f"http://127.0.0.1:{mirror.port}"


async def test_installer_files_download_verified_by_their_full_path_in_sha256sums(
        world: Any, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's SHA256SUMS lists several initrd.gz (cdrom, netboot, gtk): the netboot one is
    picked by its full path. A real HTTP server on loopback plays the Debian mirror."""
    import gzip
    import hashlib

    client, ctx, _ = world
    kernel, initrd = b"\x7fkernel" * 1000, gzip.compress(b"initrd" * 2000)
    other = b"cdrom initrd"
    sums = "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n" for name, body in (
        ("./cdrom/initrd.gz", other), ("./netboot/debian-installer/amd64/initrd.gz", initrd),
        ("./netboot/debian-installer/amd64/linux", kernel)))
    files = {"/d/SHA256SUMS": sums.encode(),
             "/d/netboot/debian-installer/amd64/linux": kernel,
             "/d/netboot/debian-installer/amd64/initrd.gz": initrd}

    base = f"{await _mirror(aiohttp_server, files)}/d"
    real = installer_for("debian-13")
    local = dataclasses.replace(real, files=tuple(
        dataclasses.replace(f, url=f.url.replace(f.url.split("/netboot/")[0], base),
                            checksum_url=f"{base}/SHA256SUMS") for f in real.files))
    monkeypatch.setitem(INSTALLERS, "debian-13", local)
    machine = await _machine(ctx)
    wf_id = await _start(ctx, machine, "debian-13")
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.actions[0]["state"] == "succeeded", wf.error
    assert wf.image["initrd"]["digest"] == hashlib.sha256(initrd).hexdigest()
    assert wf.image["kernel"]["digest"] == hashlib.sha256(kernel).hexdigest()

    # Bytes that differ from the checksum file: refused, never served; the install fails.
    files["/d/netboot/debian-installer/amd64/linux"] = b"tampered" * 100
    for image in await ctx.images.list():
        await ctx.images.remove(image.digest, force=True)
    other_machine = await _machine(ctx, "52:54:00:5e:00:04")
    wf_id = await _start(ctx, other_machine, "debian-13")
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.FAILED and "checksum mismatch" in wf.error


async def test_rhel_pxeboot_files_are_verified_against_the_trees_treeinfo(
        world: Any, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rocky/Alma: vmlinuz and initrd.img are checked against the sha256 the tree's
    .treeinfo lists in [checksums], fetched from the same mirror (a real HTTP server on
    loopback plays it); a mismatch or a missing line refuses, with the reason."""
    import hashlib

    client, ctx, _ = world
    kernel, initrd = b"\x7fvmlinuz" * 1000, b"initrd.img" * 3000

    def treeinfo(kernel_sum: str, with_initrd: bool = True) -> bytes:
        lines = ["[general]", "family = Rocky Linux", "version = 10", "",
                 "[checksums]", f"images/pxeboot/vmlinuz = sha256:{kernel_sum}",
                 f"images/install.img = sha256:{'0' * 64}"]
        if with_initrd:
            lines.append(f"images/pxeboot/initrd.img = sha256:"
                         f"{hashlib.sha256(initrd).hexdigest()}")
        return ("\n".join(lines) + "\n").encode()

    files = {"/os/.treeinfo": treeinfo(hashlib.sha256(kernel).hexdigest()),
             "/os/images/pxeboot/vmlinuz": kernel, "/os/images/pxeboot/initrd.img": initrd}

    root = await _mirror(aiohttp_server, files)
    real = installer_for("rocky-10")
    assert real.files[0].checksum_url == f"{real.repo}.treeinfo"
    local = dataclasses.replace(real, files=tuple(
        dataclasses.replace(f, url=f.url.replace(real.repo, f"{root}/os/"),
                            checksum_url=f"{root}/os/.treeinfo")
        for f in real.files))
    monkeypatch.setitem(INSTALLERS, "rocky-10", local)

    async def install(mac: str) -> Any:
        for image in await ctx.images.list():
            if any(t.startswith("installer:rocky-10:") for t in image.templates):
                await ctx.images.remove(image.digest, force=True)
        return await ctx.fleet.get_workflow(await _start(ctx, await _machine(ctx, mac),
                                                         "rocky-10"))

    wf = await install("52:54:00:5e:00:21")
    assert wf.actions[0]["state"] == "succeeded", wf.error
    assert wf.image["kernel"]["digest"] == hashlib.sha256(kernel).hexdigest()
    assert wf.image["initrd"]["digest"] == hashlib.sha256(initrd).hexdigest()

    # The mirror serves a kernel that is not the one .treeinfo lists: refused.
    files["/os/images/pxeboot/vmlinuz"] = b"tampered" * 100
    wf = await install("52:54:00:5e:00:22")
    assert wf.state is WorkflowState.FAILED and "checksum mismatch" in wf.error, wf.error

    # A .treeinfo without a line for initrd.img: refused, never downloaded unverified.
    files["/os/images/pxeboot/vmlinuz"] = kernel
    files["/os/.treeinfo"] = treeinfo(hashlib.sha256(kernel).hexdigest(), with_initrd=False)
    wf = await install("52:54:00:5e:00:23")
    assert wf.state is WorkflowState.FAILED, wf.error
    assert "no checksum for images/pxeboot/initrd.img" in wf.error


async def test_a_machine_booting_before_its_installer_is_ready_tries_again(world: Any) -> None:
    from dragonfly.domain.model import Workflow
    from dragonfly.simple.engine import new_actions

    _, ctx, _ = world
    machine = await _machine(ctx)
    wf = Workflow(id="w1", machine_id=machine.id, template="debian-12", engine="simple",
                  state=WorkflowState.RUNNING, actions=new_actions())
    script = await ctx.simple.boot_script(machine, wf, "http://10.0.0.1:3000")
    assert script is not None and "sleep 10" in script
    assert f"chain --replace http://10.0.0.1:3000/boot/{MAC}.ipxe" in script
    wf.engine = "native"  # another engine's workflow: not Simple mode's business
    assert await ctx.simple.boot_script(machine, wf, "http://10.0.0.1:3000") is None


async def test_offline_import_from_a_debian_package(world: Any, tmp_path: Path) -> None:
    """A .deb built here with dpkg-deb (the real package is the lab test's, 133 MB)."""
    import shutil as sh

    from dragonfly.simple.importer import import_package

    if sh.which("dpkg-deb") is None:
        pytest.fail("dpkg-deb is missing (apt-get install dpkg)")
    _, ctx, _ = world
    installer = installer_for("debian-12")
    root = tmp_path / "pkg"
    for member, body in zip(installer.package_paths, (b"kernel!" * 500, b"initrd!" * 900),
                            strict=True):
        (root / member).parent.mkdir(parents=True, exist_ok=True)
        (root / member).write_bytes(body)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        "Package: fake-netboot\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n")
    deb = tmp_path / "fake.deb"
    await asyncio.to_thread(subprocess.run, ["dpkg-deb", "--build", "--root-owner-group",
                                              str(root), str(deb)],
                            check=True, capture_output=True, timeout=60)
    found = await import_package(ctx.images, installer, deb)
    assert found["kernel"]["size"] == 3500 and found["initrd"]["size"] == 6300
    image = await ctx.images.for_template(installer.image_key("initrd"))
    assert image is not None and image.digest == found["initrd"]["digest"]
    with pytest.raises(InvalidInput, match="does not contain"):
        await import_package(ctx.images, installer_for("debian-13"), deb)
