"""The cloud-init NoCloud seed of one deployment: meta-data, user-data and network-config.

``render_seed(template, machine, options, deployment_id=..., phone_home_url=...)`` returns the
three files' text, which the ``write-seed`` action puts in
``/var/lib/cloud/seed/nocloud/`` of the written root filesystem.

- **meta-data**: ``instance-id`` is the deployment id, so every deployment (a reimage too) is
  a new instance to cloud-init and its per-instance modules run again; ``local-hostname``.
- **user-data**: Dragonfly's ``#cloud-config`` (hostname and fqdn, the default user with SSH
  keys and a locked password, growpart/resize_rootfs, and ``phone_home`` to the one-time
  per-deployment URL posting the host keys, instance id, hostname and fqdn). No password is
  ever written: operator user-data that mentions ``plain_text_passwd`` or ``chpasswd`` is
  refused.
- The template's ``user_data`` (or the deploy options' ``user_data``, which replaces it) is
  jinja2 over the machine's facts (``machine_facts``). When it renders to something, the
  user-data becomes a MIME multipart: Dragonfly's cloud-config first, the operator's part
  second. An operator ``#cloud-config`` part carries ``Merge-Type:
  dict(recurse_array)+list(append)``: its keys are merged into Dragonfly's (its scalars win,
  its lists such as ``users``, ``runcmd`` or ``packages`` are appended). A part starting with
  ``#!``, ``#include``, ``#cloud-boothook`` or ``#part-handler`` is passed as that type.
- **network-config**: version 2 from the machine's NICs and the options' ``network`` settings
  (``dragonfly.templates.network``).

Every file is written as JSON, which is YAML: cloud-init reads all three with a YAML loader,
and ``cloud-init schema`` validates the generated cloud-config (tests/test_seed.py). That keeps
PyYAML out of the runtime dependencies. The characters YAML refuses or folds raw (C1 controls, NEL,
line and paragraph separators) are escaped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any
from urllib.parse import urlsplit

from dragonfly.domain.model import Machine
from dragonfly.errors import InvalidInput
from dragonfly.templates.model import USER_DATA_MAX, OsTemplate, validate_ssh_keys
from dragonfly.templates.network import NetworkSettings, network_config, parse_network
from dragonfly.templates.render import check_syntax, password_problem, render

PHONE_HOME_POST = ("pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519", "instance_id",
                   "hostname", "fqdn")
PHONE_HOME_TRIES = 10
OPERATOR_MERGE = "dict(recurse_array)+list(append)"
# The first line of an operator part and the MIME type cloud-init dispatches it by.
PART_TYPES = {"#cloud-config": "cloud-config", "#!": "x-shellscript",
              "#include": "x-include-url", "#cloud-boothook": "cloud-boothook",
              "#part-handler": "part-handler"}
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")
OPTION_KEYS = ("hostname", "ssh_keys", "user_data", "network")


@dataclass(frozen=True)
class DeployOptions:
    hostname: str = ""  # "" = from the machine's name; "web01.example.com" sets the fqdn too
    ssh_keys: tuple[str, ...] = ()  # added to the template's
    user_data: str | None = None  # replaces the template's user_data; None = keep it
    network: NetworkSettings = field(default_factory=NetworkSettings)


def parse_deploy_options(data: object, others: Collection[str] = ("template", "disk")
                         ) -> DeployOptions:
    """The seed's share of a deploy request. Keys in ``others`` belong to the caller (the
    workflow's template and disk choice); any other unknown key is refused, to catch typos."""
    if data is None:
        return DeployOptions()
    if not isinstance(data, dict):
        raise InvalidInput("deploy options must be an object")
    unknown = sorted(set(data) - set(OPTION_KEYS) - set(others))
    if unknown:
        raise InvalidInput(f"unknown deploy option{'s' if len(unknown) > 1 else ''}: "
                           f"{', '.join(unknown)}", {"known": [*OPTION_KEYS, *others]})
    hostname = data.get("hostname", "")
    if not isinstance(hostname, str):
        raise InvalidInput("hostname must be text")
    if hostname:
        split_hostname(hostname)  # refuse a bad one now, not at render time
    user_data = data.get("user_data")
    if user_data is not None:
        if not isinstance(user_data, str) or len(user_data) > USER_DATA_MAX:
            raise InvalidInput(f"user_data must be text of at most {USER_DATA_MAX} bytes")
        problem = check_syntax(user_data) or password_problem(user_data)
        if problem:
            raise InvalidInput(f"user_data: {problem}")
    return DeployOptions(hostname=hostname.strip().lower(),
                         ssh_keys=validate_ssh_keys(data.get("ssh_keys", [])),
                         user_data=user_data, network=parse_network(data.get("network")))


def split_hostname(name: str) -> tuple[str, str]:
    """(hostname, fqdn) of an operator-given name; fqdn is "" for a single label."""
    text = name.strip().lower().rstrip(".")
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidInput(f"{name[:80]!r} is not a host name: labels of letters, digits and "
                           "'-', each at most 63 characters")
    return labels[0], text if len(labels) > 1 else ""


def default_hostname(machine: Machine) -> tuple[str, str]:
    """From the machine's name (a PTR name or a memorable one), made into a valid host name."""
    labels = [re.sub(r"[^a-z0-9-]+", "-", part).strip("-")[:63].strip("-")
              for part in machine.name.lower().strip(".").split(".")]
    if labels and all(labels):
        return labels[0], ".".join(labels) if len(labels) > 1 else ""
    return f"machine-{re.sub(r'[^a-z0-9]', '', machine.id.lower())[:20] or 'unknown'}", ""


def machine_facts(machine: Machine, hostname: str, fqdn: str, template: OsTemplate,
                  deployment_id: str) -> dict[str, Any]:
    """What a user-data template can use: ``{{ name }}``, ``{{ ip }}``, ``{{ tags }}`` ...;
    ``machine`` is the whole inventory record and ``template`` the template's definition."""
    record = machine.to_dict()
    return {
        "name": machine.name, "hostname": hostname, "fqdn": fqdn or hostname,
        "mac": machine.mac, "macs": list(machine.macs), "ip": machine.ip or "",
        "tags": list(machine.tags), "role": machine.role, "cpu": record["cpu"],
        "memory_bytes": machine.memory_bytes, "memory_gib": machine.memory_bytes // 1024**3,
        "disks": record["disks"], "nics": record["nics"], "serial": machine.serial,
        "vendor": machine.vendor, "product": machine.product, "id": machine.id,
        "deployment_id": deployment_id, "machine": record,
        "template": {"slug": template.slug, "name": template.name, "family": template.family,
                     "version": template.version, "default_user": template.default_user},
    }


def to_yaml(data: Any) -> str:
    """``data`` as JSON that any YAML 1.1 loader (cloud-init's PyYAML) reads back equal."""
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text) + "\n"


def cloud_config(template: OsTemplate, options: DeployOptions, hostname: str, fqdn: str,
                 phone_home_url: str) -> dict[str, Any]:
    """Dragonfly's own cloud-config for a deployment (a dict; ``to_yaml`` writes it)."""
    keys = list(dict.fromkeys([*template.ssh_keys, *options.ssh_keys]))
    config: dict[str, Any] = {"hostname": hostname}
    if fqdn:
        config["fqdn"] = fqdn
    config.update({"preserve_hostname": False, "manage_etc_hosts": True})
    if template.default_user:
        user: dict[str, Any] = {"name": template.default_user, "lock_passwd": True,
                                "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL"}
        if keys:
            user["ssh_authorized_keys"] = keys
        config["users"] = [user]
    else:  # the image's own default user (cloud-init's system_info) gets the keys
        config["users"] = ["default"]
        if keys:
            config["ssh_authorized_keys"] = keys
    config.update({
        "disable_root": True, "ssh_pwauth": False,
        "growpart": {"mode": "auto", "devices": ["/"]}, "resize_rootfs": True,
        "phone_home": {"url": phone_home_url, "post": list(PHONE_HOME_POST),
                       "tries": PHONE_HOME_TRIES},
    })
    return config


def _operator_part(text: str) -> MIMEText:
    first = text.lstrip().split("\n", 1)[0].strip()
    subtype = next((t for prefix, t in PART_TYPES.items() if first.startswith(prefix)), None)
    if subtype is None:
        raise InvalidInput(f"user_data must start with one of {', '.join(PART_TYPES)}; it "
                           f"starts with {first[:40]!r}")
    part = _text_part(text.lstrip(), subtype, "operator")
    if subtype == "cloud-config":
        part["Merge-Type"] = OPERATOR_MERGE
    return part


def _text_part(text: str, subtype: str, name: str) -> MIMEText:
    charset = "us-ascii" if text.isascii() else "utf-8"
    part = MIMEText(text, subtype, charset)
    part.add_header("Content-Disposition", "attachment", filename=name)
    return part


def render_seed(template: OsTemplate, machine: Machine, options: DeployOptions, *,
                deployment_id: str, phone_home_url: str) -> dict[str, str]:
    """{"meta-data", "user-data", "network-config"} for one deployment; InvalidInput saying
    what is wrong (a user-data template that does not render, a bond naming a foreign MAC)."""
    if not deployment_id or len(deployment_id) > 128 or not deployment_id.isprintable() \
            or " " in deployment_id:
        raise InvalidInput("the deployment id must be 1-128 printable characters, no spaces")
    url = urlsplit(phone_home_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise InvalidInput(f"phone-home URL {phone_home_url!r} is not an http(s) URL")
    hostname, fqdn = (split_hostname(options.hostname) if options.hostname
                      else default_hostname(machine))
    ours = "#cloud-config\n" + to_yaml(cloud_config(template, options, hostname, fqdn,
                                                    phone_home_url))
    source = template.user_data if options.user_data is None else options.user_data
    extra = render(source, machine_facts(machine, hostname, fqdn, template, deployment_id))
    if extra.strip():
        problem = password_problem(extra)
        if problem:
            raise InvalidInput(f"user_data: {problem}")
        # A boundary that depends on the content, so a seed renders the same every time.
        boundary = "dragonfly-" + hashlib.sha256((ours + extra).encode()).hexdigest()[:24]
        message = MIMEMultipart(boundary=boundary)
        message.attach(_text_part(ours, "cloud-config", "dragonfly"))
        message.attach(_operator_part(extra))
        user_data = message.as_string()
    else:
        user_data = ours
    meta = {"instance-id": deployment_id, "local-hostname": fqdn or hostname}
    return {"meta-data": to_yaml(meta), "user-data": user_data,
            "network-config": to_yaml(network_config(machine, options.network))}
