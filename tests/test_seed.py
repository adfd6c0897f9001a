"""The cloud-init NoCloud seed: meta-data, user-data and network-config, checked against
cloud-init itself (its schema validator and its network-config parser) where it is installed
(``scripts/test`` installs Debian's cloud-init)."""

from __future__ import annotations

import email
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dragonfly.domain.model import Machine, State
from dragonfly.errors import InvalidInput
from dragonfly.templates.catalog import BUILTIN, BUILTIN_BY_SLUG
from dragonfly.templates.model import OsTemplate, parse_template
from dragonfly.templates.seed import (
    OPERATOR_MERGE,
    DeployOptions,
    parse_deploy_options,
    render_seed,
    to_yaml,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5bWF0ZXJpYWwxMjM0NTY3ODkwYWJjZGVm op@lab"
MACS = ["52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:aa:00:03"]
URL = "http://10.0.0.2:3000/api/phone-home/tok-123"
CLOUD_INIT = shutil.which("cloud-init")
needs_cloud_init = pytest.mark.skipif(CLOUD_INIT is None, reason="cloud-init is not installed")
PASSWORD_WORDS = ("passwd", "password", "chpasswd")


def machine(nics: int = 1) -> Machine:
    return Machine(id="m1", name="brave-falcon-42", state=State.READY, mac=MACS[0],
                   macs=MACS[:nics], ip="10.0.0.5", tags=["rack-a1", "web"], role="web",
                   cpu={"model": "EPYC", "cores": 16}, memory_bytes=64 * 1024**3,
                   disks=[{"name": "sda", "size_bytes": 480 * 10**9}],
                   nics=[{"name": f"eth{i}", "mac": MACS[i]} for i in range(nics)])


def seed(template: OsTemplate, m: Machine, options: DeployOptions | None = None
         ) -> dict[str, str]:
    return render_seed(template, m, options or DeployOptions(ssh_keys=(KEY,)),
                       deployment_id="wf-0001", phone_home_url=URL)


def parts(user_data: str) -> list[tuple[str, str, Any]]:
    """(content type, text, message) of each part of a multipart user-data."""
    message = email.message_from_string(user_data)
    assert message.is_multipart()
    out = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out.append((part.get_content_type(), payload.decode(), part))
    return out


def cloud_config(text: str) -> dict[str, Any]:
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def schema_check(tmp_path: Path, text: str) -> None:
    path = tmp_path / "user-data.yaml"
    path.write_text(text)
    result = subprocess.run([str(CLOUD_INIT), "schema", "--config-file", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


# --- one NIC, DHCP ---------------------------------------------------------------------------

@pytest.mark.parametrize("template", BUILTIN, ids=lambda t: t.slug)
def test_seed_for_one_nic(template: OsTemplate) -> None:
    files = seed(template, machine())
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": "wf-0001", "local-hostname": "brave-falcon-42"}
    config = cloud_config(files["user-data"])
    assert config["hostname"] == "brave-falcon-42" and "fqdn" not in config
    assert config["users"] == [{"name": template.default_user, "lock_passwd": True,
                                "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                                "ssh_authorized_keys": [KEY]}]
    assert config["phone_home"] == {
        "url": URL, "tries": 10, "post": ["pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519",
                                          "instance_id", "hostname", "fqdn"]}
    assert config["growpart"]["mode"] == "auto" and config["resize_rootfs"] is True
    assert config["ssh_pwauth"] is False
    # Never a password: no user has one, no chpasswd, and the text names none (lock_passwd
    # and sudo's NOPASSWD are the opposite: no password is asked or accepted).
    assert not {"passwd", "plain_text_passwd", "hashed_passwd"} & set(config["users"][0])
    assert not {"chpasswd", "password"} & set(config)
    lowered = files["user-data"].lower().replace('"lock_passwd": true', "").replace(
        "nopasswd:all", "")
    assert not any(word in lowered for word in PASSWORD_WORDS)
    network = yaml.safe_load(files["network-config"])
    assert network == {"version": 2, "ethernets": {
        "nic0": {"match": {"macaddress": MACS[0]}, "dhcp4": True}}}


def test_hostname_from_options_sets_the_fqdn() -> None:
    options = parse_deploy_options({"hostname": "Web01.Example.COM", "ssh_keys": [KEY],
                                    "template": "debian-12", "disk": ""})
    files = seed(BUILTIN_BY_SLUG["debian-12"], machine(), options)
    config = cloud_config(files["user-data"])
    assert (config["hostname"], config["fqdn"]) == ("web01", "web01.example.com")
    assert yaml.safe_load(files["meta-data"])["local-hostname"] == "web01.example.com"


def test_a_machine_name_that_is_no_hostname_is_made_one() -> None:
    m = machine()
    m.name = "Rack 4 / Slot_7"
    config = cloud_config(seed(BUILTIN_BY_SLUG["debian-12"], m)["user-data"])
    assert config["hostname"] == "rack-4-slot-7"


@pytest.mark.parametrize(("options", "words"), [
    ({"hostname": "bad_name!"}, "not a host name"),
    ({"ssh_keys": ["password123"]}, "OpenSSH public key"),
    ({"user_data": "#cloud-config\n{% if %}"}, "line 2"),
    ({"user_data": "#cloud-config\nusers: [{name: a, plain_text_passwd: x}]"}, "plaintext"),
    ({"colour": "red"}, "unknown deploy option"),
    ({"network": {"bonds": [{"name": "bond0", "interfaces": [MACS[0]], "mode": "lacp"}]}},
     "mode must be one of"),
    ({"network": {"vlans": [{"id": 5000, "link": "bond0"}]}}, "between 1 and 4094"),
    ({"network": {"addresses": ["10.0.0.5"]}}, "with a prefix"),
    ({"network": {"addresses": ["10.0.0.5/24"], "gateway4": "10.9.9.1"}}, "on none of"),
    ({"network": {"bonds": [{"name": "bond0", "interfaces": []}]}}, "MACs of its NICs"),
])
def test_bad_deploy_options_are_refused_clearly(options: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_deploy_options(options)


# --- operator user-data ----------------------------------------------------------------------

OPERATOR = """#cloud-config
packages: [htop]
write_files:
  - path: /etc/motd
    content: "{{ name }} ({{ role }}) in {{ tags | join(', ') }}, {{ memory_gib }} GiB\\n"
runcmd:
  - echo {{ ip }} {{ nics | length }} > /root/facts
"""


def test_template_user_data_is_rendered_and_merged_as_a_second_part() -> None:
    template = parse_template({**BUILTIN_BY_SLUG["ubuntu-24.04"].stored(), "slug": "ubuntu-web",
                               "user_data": OPERATOR})
    files = seed(template, machine())
    (type1, ours, _), (type2, theirs, message) = parts(files["user-data"])
    assert (type1, type2) == ("text/cloud-config", "text/cloud-config")
    assert cloud_config(ours)["phone_home"]["url"] == URL
    assert message["Merge-Type"] == OPERATOR_MERGE
    extra = cloud_config(theirs)
    assert extra["write_files"][0]["content"] == \
        "brave-falcon-42 (web) in rack-a1, web, 64 GiB\n"
    assert extra["runcmd"] == ["echo 10.0.0.5 1 > /root/facts"]
    assert seed(template, machine()) == files  # deterministic, boundary included


def test_options_user_data_replaces_the_templates_and_may_be_a_script() -> None:
    template = parse_template({**BUILTIN_BY_SLUG["debian-12"].stored(), "slug": "d",
                               "user_data": OPERATOR})
    options = parse_deploy_options({"user_data": "#!/bin/sh\necho {{ hostname }}\n"})
    (_, _, _), (kind, text, _) = parts(seed(template, machine(), options)["user-data"])
    assert (kind, text) == ("text/x-shellscript", "#!/bin/sh\necho brave-falcon-42\n")
    nothing = parse_deploy_options({"user_data": ""})
    assert seed(template, machine(), nothing)["user-data"].startswith("#cloud-config\n")


def test_user_data_that_does_not_render_says_the_line() -> None:
    options = parse_deploy_options({"user_data": "#cloud-config\nruncmd:\n - {{ nope }}\n"})
    with pytest.raises(InvalidInput, match="on line 3.*'nope' is undefined"):
        seed(BUILTIN_BY_SLUG["debian-12"], machine(), options)
    sandboxed = parse_deploy_options({"user_data": "#!/bin/sh\n{{ name.__class__ }}\n"})
    with pytest.raises(InvalidInput, match="unsafe"):
        seed(BUILTIN_BY_SLUG["debian-12"], machine(), sandboxed)
    untyped = parse_deploy_options({"user_data": "hello {{ name }}"})
    with pytest.raises(InvalidInput, match="must start with one of"):
        seed(BUILTIN_BY_SLUG["debian-12"], machine(), untyped)


# --- bonds and VLANs -------------------------------------------------------------------------

BONDED = {"nameservers": ["10.0.0.53"], "search": ["example.com"],
          "bonds": [{"name": "bond0", "interfaces": MACS[:2], "mode": "802.3ad",
                     "lacp_rate": "fast", "transmit_hash_policy": "layer3+4", "mtu": 9000,
                     "dhcp4": False}],
          "vlans": [{"id": 100, "link": "bond0", "addresses": ["10.0.100.5/24"],
                     "gateway4": "10.0.100.1"},
                    {"id": 200, "link": MACS[2].upper(), "addresses": ["10.0.200.5/24"]}]}


def test_bond_and_vlans() -> None:
    options = parse_deploy_options({"network": BONDED})
    network = yaml.safe_load(seed(BUILTIN_BY_SLUG["rocky-9"], machine(3), options)
                             ["network-config"])
    assert network["ethernets"] == {f"nic{i}": {"match": {"macaddress": MACS[i]},
                                                "dhcp4": False} for i in range(3)}
    assert network["bonds"] == {"bond0": {
        "interfaces": ["nic0", "nic1"], "dhcp4": False, "mtu": 9000,
        "parameters": {"mode": "802.3ad", "lacp-rate": "fast",
                       "transmit-hash-policy": "layer3+4", "mii-monitor-interval": 100},
        "nameservers": {"addresses": ["10.0.0.53"], "search": ["example.com"]}}}
    assert network["vlans"] == {
        "bond0.100": {"id": 100, "link": "bond0", "dhcp4": False,
                      "addresses": ["10.0.100.5/24"],
                      "routes": [{"to": "0.0.0.0/0", "via": "10.0.100.1"}]},
        "nic2.200": {"id": 200, "link": "nic2", "dhcp4": False,
                     "addresses": ["10.0.200.5/24"]}}


def test_static_address_on_the_boot_nic() -> None:
    options = parse_deploy_options({"network": {"addresses": ["10.0.0.5/24", "2001:db8::5/64"],
                                                "gateway4": "10.0.0.1",
                                                "gateway6": "2001:db8::1"}})
    network = yaml.safe_load(seed(BUILTIN_BY_SLUG["debian-12"], machine(), options)
                             ["network-config"])
    assert network["ethernets"]["nic0"] == {
        "match": {"macaddress": MACS[0]}, "dhcp4": False,
        "addresses": ["10.0.0.5/24", "2001:db8::5/64"],
        "routes": [{"to": "0.0.0.0/0", "via": "10.0.0.1"}, {"to": "::/0", "via": "2001:db8::1"}]}


def test_network_settings_must_name_the_machines_own_nics() -> None:
    options = parse_deploy_options({"network": {"bonds": [
        {"name": "bond0", "interfaces": [MACS[0], "02:00:00:00:00:99"]}]}})
    with pytest.raises(InvalidInput, match="02:00:00:00:00:99 is not a NIC of brave-falcon-42"):
        seed(BUILTIN_BY_SLUG["debian-12"], machine(2), options)
    both = parse_deploy_options({"network": {"addresses": ["10.0.0.5/24"], "bonds": [
        {"name": "bond0", "interfaces": MACS[:2], "addresses": ["10.0.0.6/24"]}]}})
    with pytest.raises(InvalidInput, match="not both"):
        seed(BUILTIN_BY_SLUG["debian-12"], machine(2), both)
    dangling = parse_deploy_options({"network": {"vlans": [{"id": 7, "link": "bond9"}]}})
    with pytest.raises(InvalidInput, match="neither a bond"):
        seed(BUILTIN_BY_SLUG["debian-12"], machine(2), dangling)


# --- YAML as JSON ----------------------------------------------------------------------------

def test_json_output_reads_back_as_the_same_yaml() -> None:
    data = {"a": "tab\there \u0085 \u2028 \x7f nul\x00 \U0001f600 é", "b": [1, 2.5, None, True],
            "c": {"yes": "no", "on": "off", "': #": "- [x]"}, "d": "null", "e": "0x1F"}
    assert yaml.safe_load(to_yaml(data)) == data
    assert json.loads(to_yaml(data)) == data


# --- cloud-init itself -----------------------------------------------------------------------

@needs_cloud_init
def test_cloud_init_schema_accepts_the_user_data(tmp_path: Path) -> None:
    options = parse_deploy_options({"hostname": "web01.example.com", "ssh_keys": [KEY]})
    schema_check(tmp_path, seed(BUILTIN_BY_SLUG["debian-12"], machine(), options)["user-data"])
    no_user = parse_template({**BUILTIN_BY_SLUG["debian-12"].stored(), "slug": "x",
                              "default_user": ""})
    schema_check(tmp_path, seed(no_user, machine())["user-data"])
    template = parse_template({**BUILTIN_BY_SLUG["ubuntu-24.04"].stored(), "slug": "u",
                               "user_data": OPERATOR})
    for kind, text, _ in parts(seed(template, machine())["user-data"]):
        assert kind == "text/cloud-config"
        schema_check(tmp_path, text)


@needs_cloud_init
@pytest.mark.parametrize(("distro", "renderer", "expect"), [
    ("debian", "networkd", "etc/systemd/network/10-cloud-init-bond0.100.network"),
    ("debian", "eni", "etc/network/interfaces.d/50-cloud-init"),
    ("rocky", "sysconfig", "etc/sysconfig/network-scripts/ifcfg-bond0"),
    ("ubuntu", "netplan", "etc/netplan/50-cloud-init.yaml"),
])
def test_cloud_init_renders_the_network_config(tmp_path: Path, distro: str, renderer: str,
                                               expect: str) -> None:
    """cloud-init 22.4 (Debian 12) has no network-config schema validator; its own v2 parser
    and renderers (``cloud-init devel net-convert``) are the check instead."""
    options = parse_deploy_options({"network": BONDED})
    path = tmp_path / "network-config"
    path.write_text(seed(BUILTIN_BY_SLUG["rocky-9"], machine(3), options)["network-config"])
    out = tmp_path / "out"
    result = subprocess.run([str(CLOUD_INIT), "devel", "net-convert", "-p", str(path), "-k",
                             "yaml", "-D", distro, "-O", renderer, "-d", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = (out / expect).read_text()
    assert "10.0.100" in rendered or renderer == "sysconfig"
    if renderer == "sysconfig":
        assert "mode=802.3ad" in rendered and "lacp_rate=fast" in rendered
