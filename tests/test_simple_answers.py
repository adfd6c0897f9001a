"""Simple mode's answer files, checked by the installers' own tools where they exist:
pykickstart's ``ksvalidator`` for every Rocky/Alma version the catalog offers, debconf's
``debconf-set-selections -c`` for preseeds, and subiquity's documented autoinstall structure
(version 1, identity, storage, late-commands) for Ubuntu. Plus: never a plaintext password,
overrides, and the preview API."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dragonfly.domain.model import Machine, State
from dragonfly.errors import InvalidInput
from dragonfly.simple.render import check_override, render_answer
from dragonfly.simple.spec import build_spec
from dragonfly.templates.catalog import BUILTIN

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk1bW9ja2tleWZvcnRlc3RzMTIzNDU2Nzg5MDEyMzQ1 op@desk"
HASH = "$6$rounds=4096$saltsalt$" + "x" * 86
BOOT, SECOND, THIRD = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
CALLBACK = "http://10.0.0.1:3000/simple/progress/52:54:00:00:00:01/" + "t" * 43


def machine() -> Machine:
    return Machine(id="m1", name="web-07", state=State.READY, mac=BOOT,
                   macs=[BOOT, SECOND, THIRD])


# Option sets every family is rendered with: keys only on DHCP; a hash, static addressing,
# a named disk, plain partitions and packages; VLANs and bonds where the family has them.
OPTION_SETS: dict[str, dict[str, Any]] = {
    "keys-dhcp": {"ssh_keys": [KEY]},
    "static": {"password_hash": HASH, "ssh_keys": [KEY], "disk": "/dev/sda",
               "partitioning": "plain", "packages": ["vim", "htop"], "locale": "de_DE.UTF-8",
               "keyboard": "de", "timezone": "Europe/Berlin", "domain": "lab.example",
               "mirror": "http://mirror.lab.example/distro",
               "network": {"addresses": ["10.0.0.5/24"], "gateway4": "10.0.0.1",
                           "nameservers": ["10.0.0.53", "10.0.0.54"]}},
}
BONDED = {"ssh_keys": [KEY], "network": {
    "bonds": [{"name": "bond0", "interfaces": [BOOT, SECOND], "mode": "802.3ad",
               "lacp_rate": "fast", "addresses": ["10.0.0.5/24"], "gateway4": "10.0.0.1"}],
    "vlans": [{"id": 100, "link": THIRD, "addresses": ["10.1.0.5/24"]},
              {"id": 200, "link": "bond0", "name": "storage"}],
    "nameservers": ["10.0.0.53"]}}
DEBIAN_VLAN = {"ssh_keys": [KEY], "network": {"vlans": [{"id": 42, "link": BOOT}]}}

RHEL = [t for t in BUILTIN if t.family == "rhel"]


def ksvalidator() -> str:
    path = Path(sys.executable).with_name("ksvalidator")
    if not path.exists():
        pytest.fail("ksvalidator is missing: pip install pykickstart (the test extra)")
    return str(path)


@pytest.mark.parametrize("template", RHEL, ids=[t.slug for t in RHEL])
@pytest.mark.parametrize("options", [*OPTION_SETS.values(), BONDED],
                         ids=[*OPTION_SETS, "bond-vlans"])
def test_kickstart_passes_ksvalidator_for_every_rhel_version_offered(
        template: Any, options: dict[str, Any], tmp_path: Path) -> None:
    text = render_answer(build_spec(machine(), "rhel", template.version, options,
                                    callback=CALLBACK))
    path = tmp_path / "ks.cfg"
    path.write_text(text)
    done = subprocess.run([ksvalidator(), "-v", f"RHEL{template.version}", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr + text
    assert "%post --nochroot --erroronfail" in text and f"{CALLBACK}/done" in text
    assert "%onerror" in text and f"{CALLBACK}/failed" in text


def test_a_broken_kickstart_is_caught_by_ksvalidator(tmp_path: Path) -> None:
    """The check above can fail: a kickstart with an invalid option does not pass."""
    path = tmp_path / "ks.cfg"
    path.write_text("network --bootproto=none\n")
    done = subprocess.run([ksvalidator(), "-v", "RHEL9", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0


def test_kickstart_network_lines() -> None:
    text = render_answer(build_spec(machine(), "rhel", "9", BONDED))
    lines = [line for line in text.splitlines() if line.startswith("network ")]
    assert lines[0].startswith(f"network --device=bond0 --bondslaves={BOOT},{SECOND} "
                               "--bondopts=mode=802.3ad,miimon=100,lacp_rate=fast "
                               "--vlanid=200 --interfacename=storage --bootproto=static "
                               "--ip=10.0.0.5 --netmask=255.255.255.0 --gateway=10.0.0.1")
    assert "--hostname=web-07 --activate" in lines[0]
    assert lines[1] == (f"network --device={THIRD} --vlanid=100 --interfacename=vlan100 "
                        "--bootproto=static --ip=10.1.0.5 --netmask=255.255.255.0 --noipv6 "
                        "--onboot=yes")
    assert "rootpw --lock" in text and "user --name=admin --groups=wheel --lock" in text
    assert f'sshkey --username=admin "{KEY}"' in text


def debconf_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("debconf-set-selections")
    if tool is None:
        pytest.fail("debconf-set-selections is missing (apt-get install debconf)")
    path = tmp_path / "preseed.cfg"
    path.write_text(text)
    return subprocess.run([tool, "-c", str(path)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("options", [*OPTION_SETS.values(), DEBIAN_VLAN],
                         ids=[*OPTION_SETS, "vlan"])
@pytest.mark.parametrize("version", ["12", "13"])
def test_preseed_passes_debconf_set_selections(options: dict[str, Any], version: str,
                                               tmp_path: Path) -> None:
    text = render_answer(build_spec(machine(), "debian", version, options, callback=CALLBACK))
    done = debconf_check(text, tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr + text
    assert "d-i passwd/user-password-crypted password " in text
    assert f"wget -q -O /dev/null '{CALLBACK}/done'" in text
    assert "d-i preseed/early_command string" in text


def test_a_broken_preseed_is_caught_by_debconf(tmp_path: Path) -> None:
    done = debconf_check("d-i netcfg/get_hostname\n", tmp_path)
    assert done.returncode != 0 or done.stderr


def test_preseed_static_network_and_vlan() -> None:
    text = render_answer(build_spec(machine(), "debian", "12",
                                    {**OPTION_SETS["static"], "network": {
                                        "addresses": ["10.0.0.5/24"], "gateway4": "10.0.0.1",
                                        "nameservers": ["10.0.0.53"],
                                        "vlans": [{"id": 42, "link": BOOT}]}}))
    for line in ("d-i netcfg/get_ipaddress string 10.0.0.5",
                 "d-i netcfg/get_netmask string 255.255.255.0",
                 "d-i netcfg/get_gateway string 10.0.0.1",
                 "d-i netcfg/vlan_id string 42", "d-i partman-auto/method string regular",
                 "d-i mirror/http/hostname string mirror.lab.example",
                 "d-i mirror/http/directory string /distro",
                 "d-i time/zone string Europe/Berlin", "d-i partman-auto/disk string /dev/sda"):
        assert line in text.splitlines(), line


def test_debian_refuses_what_its_installer_cannot_do() -> None:
    with pytest.raises(InvalidInput, match="cannot configure a bond"):
        build_spec(machine(), "debian", "12", BONDED)
    with pytest.raises(InvalidInput, match="on the boot NIC"):
        build_spec(machine(), "debian", "12",
                   {"ssh_keys": [KEY], "network": {"vlans": [{"id": 4, "link": THIRD}]}})


@pytest.mark.parametrize("options", [*OPTION_SETS.values(), BONDED],
                         ids=[*OPTION_SETS, "bond-vlans"])
def test_autoinstall_has_subiquitys_documented_structure(options: dict[str, Any]) -> None:
    text = render_answer(build_spec(machine(), "ubuntu", "24.04", options,
                                    callback=CALLBACK))
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert set(doc) == {"autoinstall"}
    ai = doc["autoinstall"]
    assert ai["version"] == 1
    identity = ai["identity"]
    assert set(identity) >= {"hostname", "username", "password"}
    assert identity["hostname"] == "web-07"
    assert identity["password"] == options.get("password_hash", "!")  # hashed or locked
    assert ai["storage"]["layout"]["name"] in ("lvm", "direct")
    assert isinstance(ai["late-commands"], list) and ai["late-commands"]
    assert f"{CALLBACK}/done" in ai["late-commands"][-1]
    assert ai["reporting"]["dragonfly"] == {"type": "webhook",
                                            "endpoint": f"{CALLBACK}/events"}
    assert ai["network"]["version"] == 2
    assert ai["ssh"]["authorized-keys"] == [KEY]
    assert ai["ssh"]["allow-pw"] is bool(options.get("password_hash"))
    if options is BONDED:
        assert ai["network"]["bonds"]["bond0"]["parameters"]["mode"] == "802.3ad"
        assert set(ai["network"]["vlans"]) == {"nic2.100", "storage"}
    if "disk" in options:
        assert ai["storage"]["layout"]["match"] == {"path": "/dev/sda"}


def test_never_a_plaintext_password() -> None:
    with pytest.raises(InvalidInput, match="plaintext password is never accepted"):
        build_spec(machine(), "debian", "12", {"password": "hunter2"})
    with pytest.raises(InvalidInput, match="crypt"):
        build_spec(machine(), "debian", "12", {"password_hash": "hunter2"})
    with pytest.raises(InvalidInput, match="ssh_keys or a password_hash"):
        build_spec(machine(), "rhel", "9", {})
    spec = build_spec(machine(), "debian", "12", {"ssh_keys": [KEY]})
    for family, override in (
            ("debian", "d-i passwd/user-password password hunter2\n"),
            ("debian", "d-i passwd/root-password-again password hunter2\n"),
            ("rhel", "rootpw hunter2\n"), ("rhel", "rootpw --plaintext hunter2\n"),
            ("rhel", "user --name=x --password=hunter2\n"),
            ("ubuntu", "autoinstall:\n  identity:\n    password: hunter2\n")):
        with pytest.raises(InvalidInput, match="plaintext password"):
            render_answer(build_spec(machine(), family, "9", {"ssh_keys": [KEY]}),
                          check_override(family, override))
    # Hashed and locked are fine.
    assert render_answer(spec, "d-i passwd/user-password-crypted password {{ '!' }}\n")
    ok = render_answer(build_spec(machine(), "rhel", "9", {"ssh_keys": [KEY]}),
                       f"rootpw --iscrypted {HASH}\nuser --name=a --iscrypted --password=x\n")
    assert ok.startswith("rootpw --iscrypted")


def test_overrides_are_checked_and_rendered_strictly() -> None:
    with pytest.raises(InvalidInput, match="syntax error on line 2"):
        check_override("debian", "ok\n{% if %}\n")
    spec = build_spec(machine(), "debian", "12", {"ssh_keys": [KEY]})
    with pytest.raises(InvalidInput, match="cannot render on line 1"):
        render_answer(spec, "{{ hostnme }}\n")
    assert render_answer(spec, "host {{ hostname }} keys {{ ssh_keys|length }}\n") == \
        "host web-07 keys 1\n"


async def test_answer_api_overrides_and_preview(aiohttp_client: Any) -> None:
    from tests.test_auth_fixtures import ctx_of_client, installed_client, setup_admin

    client = await installed_client(aiohttp_client)
    admin = await setup_admin(client)
    fleet = ctx_of_client(client).fleet
    m = await fleet.add_machine(machine())
    url = "/api/simple/answers/rocky-9"

    response = await client.get(url, headers=admin.headers())
    data = await response.json()
    assert response.status == 200, data
    assert data["kind"] == "kickstart" and data["file"] == "ks.cfg"
    assert "%packages" in data["builtin"] and data["override"] is None

    body = {"machine_id": m.id, "options": {"ssh_keys": [KEY], "packages": ["tmux"]}}
    response = await client.post(f"{url}/preview", json=body, headers=admin.headers(True))
    data = await response.json()
    assert response.status == 200, data
    assert "tmux" in data["text"] and data["override"] is False
    assert "/simple/progress/preview/done" in data["text"]

    # A preview needs no credentials; an unknown option is refused with a JSON error.
    response = await client.post(f"{url}/preview", json={"machine_id": m.id},
                                 headers=admin.headers(True))
    assert response.status == 200
    response = await client.post(f"{url}/preview", json={
        "machine_id": m.id, "options": {"password": "x"}}, headers=admin.headers(True))
    data = await response.json()
    assert response.status == 400 and "plaintext password" in data["error"]

    # Overrides: a syntax error is refused; a good one is kept and used; deleting restores.
    response = await client.put(f"{url}/override", json={"text": "{% if %}"},
                                headers=admin.headers(True))
    assert response.status == 400
    response = await client.put(f"{url}/override",
                                json={"text": "# custom for {{ hostname }}\nrootpw --lock\n"},
                                headers=admin.headers(True))
    assert response.status == 200, await response.text()
    response = await client.post(f"{url}/preview", json=body, headers=admin.headers(True))
    data = await response.json()
    assert data["text"] == "# custom for web-07\nrootpw --lock\n" and data["override"] is True
    # An unsaved text previews without being kept.
    response = await client.post(f"{url}/preview", json={**body, "text": "rootpw hunter2\n"},
                                 headers=admin.headers(True))
    assert response.status == 400 and "plaintext password" in (await response.json())["error"]
    response = await client.delete(f"{url}/override", headers=admin.headers(True))
    assert (await response.json())["removed"] is True
    response = await client.get(url, headers=admin.headers())
    assert (await response.json())["override"] is None

    # The machine page offers the preview, with the templates that have an answer file.
    response = await client.get(f"/machines/{m.id}", headers=admin.headers())
    page = await response.text()
    assert 'id="answer-form"' in page
    assert '<option value="rocky-9">Rocky Linux 9 (kickstart)</option>' in page
    assert '<option value="debian-12">' in page and '(preseed)' in page
