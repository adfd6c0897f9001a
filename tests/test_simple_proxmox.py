"""Proxmox VE in Simple mode: answer.toml rendered from the same install description, parsed
with tomllib and checked against the structure Proxmox's automated installer deserializes
(``proxmox-auto-installer/src/answer.rs``: unknown keys are refused there, so they are here);
the HTTP answer endpoint the prepared ISO POSTs its system information to, which serves a
machine's answer only to that machine (by the MACs it lists), once; and the post-installation
webhook and the first-boot hook taking the install to Installed.

No Proxmox installer runs here: its POST is played with a system-information document shaped
like the one it sends (``sysinfo.rs``: product, iso, dmi, network_interfaces[{link, mac}]); the
first-boot hook script is run for real by /bin/sh with curl against the test server."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import tomllib
from typing import Any

import pytest

from dragonfly.domain.model import State, WorkflowState
from dragonfly.errors import InvalidInput
from dragonfly.simple.installers import INSTALLERS, installer_for
from dragonfly.simple.render import check_override, render_answer
from dragonfly.simple.spec import build_spec
from tests.test_simple_answers import CALLBACK, HASH, KEY, machine
from tests.test_simple_install import _machine, _start, _text, world  # noqa: F401

ANSWERS = "http://10.0.0.1:3000/simple/answers/52:54:00:00:00:01/" + "a" * 32
STATIC = {"password_hash": HASH, "ssh_keys": [KEY], "disk": "/dev/nvme0n1",
          "domain": "lab.example", "keyboard": "de", "locale": "de_DE.UTF-8",
          "timezone": "Europe/Berlin", "filesystem": "xfs",
          "network": {"addresses": ["10.0.0.5/24"], "gateway4": "10.0.0.1",
                      "nameservers": ["10.0.0.53"]}}
DHCP = {"password_hash": HASH, "disk": "/dev/sda"}

# Proxmox's KeyboardLayout enum (answer.rs), kebab-case.
KEYBOARDS = {"de", "de-ch", "dk", "en-gb", "en-us", "es", "fi", "fr", "fr-be", "fr-ca",
             "fr-ch", "hu", "is", "it", "jp", "lt", "mk", "nl", "no", "pl", "pt", "pt-br",
             "se", "si", "tr"}


def keys(version: str) -> dict[str, str]:
    """Proxmox VE 8 (installer 8.3) names keys in snake_case; 9 in kebab-case."""
    names = ("root_password_hashed", "root_ssh_keys", "disk_list", "root_password")
    return {n: n if version == "8" else n.replace("_", "-") for n in names}


def check_structure(answer: dict[str, Any], version: str) -> None:
    """The answer against the documented structure: sections, required keys, types, no
    unknown keys (the installer denies them), and the cross-field rules of answer.rs."""
    k = keys(version)
    assert set(answer) <= {"global", "network", "disk-setup", "first-boot",
                           "post-installation-webhook"}, answer.keys()
    g = answer["global"]
    assert set(g) <= {"country", "fqdn", "keyboard", "mailto", "timezone",
                      k["root_password_hashed"], k["root_ssh_keys"]}, g.keys()
    for required in ("country", "fqdn", "keyboard", "mailto", "timezone",
                     k["root_password_hashed"]):
        assert isinstance(g[required], str) and g[required], required
    assert g["keyboard"] in KEYBOARDS
    assert len(g["country"]) == 2 and g["country"].islower()
    assert "." in g["fqdn"]  # the installer's Fqdn needs a domain
    assert "@" in g["mailto"]
    assert g[k["root_password_hashed"]].startswith("$")
    assert all(isinstance(key, str) for key in g.get(k["root_ssh_keys"], []))
    n = answer["network"]
    assert n["source"] in ("from-dhcp", "from-answer")
    if n["source"] == "from-answer":
        assert set(n) == {"source", "cidr", "dns", "gateway", "filter"}
        ipaddress.ip_interface(n["cidr"])
        ipaddress.ip_address(n["dns"])
        ipaddress.ip_address(n["gateway"])
        assert isinstance(n["filter"], dict) and n["filter"]
    else:
        assert set(n) == {"source"}  # cidr/dns/gateway/filter are refused with from-dhcp
    d = answer["disk-setup"]
    assert d["filesystem"] in ("ext4", "xfs", "zfs", "btrfs")
    assert set(d) <= {"filesystem", k["disk_list"], "filter", "lvm", "zfs", "btrfs"}
    assert (k["disk_list"] in d) != ("filter" in d)  # exactly one of them
    if d["filesystem"] in ("ext4", "xfs"):
        assert len(d.get(k["disk_list"], [])) <= 1 and "zfs" not in d and "btrfs" not in d
    for name in d.get(k["disk_list"], []):
        assert isinstance(name, str) and "/" not in name
    if "first-boot" in answer:
        f = answer["first-boot"]
        assert set(f) <= {"source", "ordering", "url"}
        assert f["source"] == "from-url" and f["url"].startswith("http")
        assert f["ordering"] in ("before-network", "network-online", "fully-up")
    if "post-installation-webhook" in answer:
        assert set(answer["post-installation-webhook"]) == {"url"}


def render(options: dict[str, Any], version: str = "9", **kw: Any) -> str:
    spec = build_spec(machine(), "proxmox", version, options, **kw)
    return render_answer(spec)


@pytest.mark.parametrize("version", ["8", "9"])
@pytest.mark.parametrize("options", [STATIC, DHCP], ids=["static", "dhcp"])
def test_answer_toml_parses_and_has_the_documented_structure(options: dict[str, Any],
                                                             version: str) -> None:
    text = render(options, version, callback=CALLBACK, answers=ANSWERS)
    answer = tomllib.loads(text)
    check_structure(answer, version)
    k = keys(version)
    g = answer["global"]
    assert g[k["root_password_hashed"]] == HASH
    assert k["root_password"] not in g  # never the plaintext form
    assert answer["post-installation-webhook"]["url"] == f"{CALLBACK}/done"
    assert answer["first-boot"] == {"source": "from-url", "ordering": "network-online",
                                    "url": f"{ANSWERS}/first-boot.sh"}
    if options is STATIC:
        assert g["fqdn"] == "web-07.lab.example" and g["keyboard"] == "de"
        assert g["country"] == "de" and g["timezone"] == "Europe/Berlin"
        assert g[k["root_ssh_keys"]] == [KEY]
        assert answer["network"] == {"source": "from-answer", "cidr": "10.0.0.5/24",
                                     "dns": "10.0.0.53", "gateway": "10.0.0.1",
                                     "filter": {"ID_NET_NAME_MAC": "*525400000001"}}
        assert answer["disk-setup"] == {"filesystem": "xfs", k["disk_list"]: ["nvme0n1"]}
    else:
        assert g["fqdn"] == "web-07.localdomain" and g["keyboard"] == "en-us"
        assert g["timezone"] == "UTC" and k["root_ssh_keys"] not in g
        assert answer["network"] == {"source": "from-dhcp"}


def test_what_proxmoxs_installer_cannot_take_is_refused_up_front() -> None:
    with pytest.raises(InvalidInput, match="root password"):
        build_spec(machine(), "proxmox", "9", {"ssh_keys": [KEY], "disk": "/dev/sda"})
    with pytest.raises(InvalidInput, match="disk"):
        build_spec(machine(), "proxmox", "9", {"password_hash": HASH})
    with pytest.raises(InvalidInput, match="disk"):
        build_spec(machine(), "proxmox", "9", {**DHCP, "disk": "/dev/disk/by-id/x"})
    with pytest.raises(InvalidInput, match="packages"):
        build_spec(machine(), "proxmox", "9", {**DHCP, "packages": ["vim"]})
    with pytest.raises(InvalidInput, match="one NIC"):
        build_spec(machine(), "proxmox", "9", {**DHCP, "network": {
            "vlans": [{"id": 5, "link": "52:54:00:00:00:01"}]}})
    with pytest.raises(InvalidInput, match="gateway4"):
        build_spec(machine(), "proxmox", "9", {**DHCP, "network": {
            "addresses": ["10.0.0.5/24"]}})
    with pytest.raises(InvalidInput, match="keyboard"):
        build_spec(machine(), "proxmox", "9", {**DHCP, "keyboard": "ru"})
    with pytest.raises(InvalidInput, match="plaintext"):
        build_spec(machine(), "proxmox", "9", {**DHCP, "password": "hunter2"})


def test_an_override_with_a_plaintext_root_password_is_refused() -> None:
    spec = build_spec(machine(), "proxmox", "9", DHCP)
    for line in ('root-password = "hunter2"', 'root_password = "hunter2"',
                 '  "root-password" = "x"'):
        override = check_override("proxmox", "[global]\n" + line + "\n")
        with pytest.raises(InvalidInput, match="plaintext password"):
            render_answer(spec, override)
    hashed = check_override("proxmox", '[global]\nroot-password-hashed = "{{ password_hash }}"\n')
    assert HASH in render_answer(spec, hashed)


def sysinfo(*macs: str) -> dict[str, Any]:
    """A system-information document as Proxmox's installer POSTs it (sysinfo.rs)."""
    return {"product": {"fullname": "Proxmox VE", "product": "pve", "enable_btrfs": True},
            "iso": {"release": "9.1", "isorelease": "1"},
            "dmi": {"system": {"serial": "S123", "uuid": "4c4c4544-0031", "name": "R650"},
                    "baseboard": {"serial": "B1"}, "chassis": {"serial": "C1"}},
            "network_interfaces": [{"link": f"eno{i}", "mac": mac}
                                   for i, mac in enumerate(macs, 1)]}


async def test_the_prepared_iso_posts_its_sysinfo_and_the_machine_gets_installed(
        world: Any) -> None:  # noqa: F811  (the fixture of test_simple_install)
    client, ctx, _ = world
    mac, other_mac = "52:54:00:5e:00:31", "52:54:00:5e:00:32"
    machine = await _machine(ctx, mac)
    wf_id = await _start(ctx, machine, "proxmox-ve-9", password_hash=HASH, disk="/dev/sda")
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.engine == "simple" and wf.actions[0]["state"] == "succeeded", wf.error

    # Its network boot leaves iPXE (the prepared ISO boots from virtual media).
    script = await _text(client, f"/boot/{mac}.ipxe")
    assert "\nexit\n" in script and "kernel" not in script

    # Unknown MACs, or a machine that is installing something else: a 404 JSON error.
    debian = await _machine(ctx, other_mac)
    await _start(ctx, debian, "debian-12")
    for macs in (("de:ad:be:ef:00:01",), (other_mac,)):
        response = await client.post("/simple/proxmox/answer", json=sysinfo(*macs))
        assert response.status == 404
        body = await response.json()
        assert "no Proxmox VE install" in json.dumps(body)
    response = await client.post("/simple/proxmox/answer", data=b"not json")
    assert response.status == 400
    response = await client.post("/simple/proxmox/answer", json=sysinfo())
    assert response.status == 400

    # The machine's MAC on its second NIC, upper-case, as the kernel may print it.
    response = await client.post("/simple/proxmox/answer",
                                 json=sysinfo("de:ad:be:ef:00:01", mac.upper()))
    text = await response.text()
    assert response.status == 200, text
    assert response.headers["Cache-Control"] == "no-store"
    answer = tomllib.loads(text)
    check_structure(answer, "9")
    assert answer["global"]["root-password-hashed"] == HASH
    assert "root-password" not in answer["global"]
    assert answer["global"]["fqdn"] == "web-07.localdomain"
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.actions[1]["state"] == "succeeded" and wf.stage == "answer-file-fetched"

    # Served once: a second POST (another machine claiming the MAC) gets nothing.
    response = await client.post("/simple/proxmox/answer", json=sysinfo(mac))
    assert response.status == 409 and HASH not in await response.text()

    # The installer reports success on the post-installation webhook (a JSON POST) ...
    hook = answer["post-installation-webhook"]["url"]
    path = hook[hook.index("/simple/"):]
    response = await client.post(path, json={"debian-version": "13", "product": {}})
    assert response.status == 200, await response.text()
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.written_at is not None and wf.state is WorkflowState.RUNNING

    # ... and the installed system runs the first-boot hook: /bin/sh and curl, for real.
    first_boot = answer["first-boot"]["url"]
    hook_script = await _text(client, first_boot[first_boot.index("/simple/"):])
    assert hook_script.startswith("#!/bin/sh\n") and "/booted" in hook_script
    # It reports done again (a no-op after the webhook) so a lost webhook cannot block it.
    assert hook_script.index("/done'") < hook_script.index("/booted'")
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the first-boot hook")
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", hook_script, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    wf = await ctx.fleet.get_workflow(wf_id)
    assert wf.state is WorkflowState.SUCCEEDED and wf.stage == "Installed"
    installed = ctx.fleet.get_machine(machine.id)
    assert installed.state is State.INSTALLED and installed.os == "proxmox-ve-9"


async def test_proxmox_is_installed_by_its_installer_only(
        world: Any) -> None:  # noqa: F811
    _client, ctx, _ = world
    assert installer_for("proxmox-ve-8").files == ()
    assert {"proxmox-ve-8", "proxmox-ve-9"} <= set(INSTALLERS)
    machine = await _machine(ctx, "52:54:00:5e:00:33")
    assert ctx.runner is not None
    with pytest.raises(InvalidInput, match="own installer"):
        await ctx.runner.start_deployment(machine, "deploy", "proxmox-ve-9", "tester",
                                          {"method": "image", "password_hash": HASH,
                                           "disk": "/dev/sda"})


async def test_answer_api_shows_and_previews_proxmox(aiohttp_client: Any) -> None:
    """Proxmox VE has no image template in the catalog, yet its answer file is shown and
    previewed like the others."""
    from tests.test_auth_fixtures import ctx_of_client, installed_client, setup_admin

    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    m = await ctx_of_client(client).fleet.add_machine(machine())
    url = "/api/simple/answers/proxmox-ve-8"
    response = await client.get(url, headers=admin.headers())
    data = await response.json()
    assert response.status == 200, data
    assert data["family"] == "proxmox" and data["file"] == "answer.toml"
    assert "[disk-setup]" in data["builtin"]
    response = await client.post(f"{url}/preview", json={"machine_id": m.id, "options": STATIC},
                                 headers=admin.headers(True))
    data = await response.json()
    assert response.status == 200, data
    answer = tomllib.loads(data["text"])
    check_structure(answer, "8")
    assert answer["global"]["root_password_hashed"] == HASH
