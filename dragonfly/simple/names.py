"""Simple mode's names, apart from the modules that use them: the answer file and the format
of each family, and the install options. The panel and the API's route table need only these
at start; the renderer, the spec and the installers' table are imported at first use."""

from __future__ import annotations

# The file each family's installer fetches.
ANSWER_FILES = {"debian": "preseed.cfg", "ubuntu": "user-data", "rhel": "ks.cfg",
                "proxmox": "answer.toml"}
KINDS = {"debian": "preseed", "ubuntu": "autoinstall", "rhel": "kickstart",
         "proxmox": "answer.toml"}
# What an install may be told (InstallSpec, built by simple.spec.build_spec).
OPTION_KEYS = ("hostname", "domain", "disk", "partitioning", "filesystem", "user",
               "password_hash", "ssh_keys", "packages", "locale", "keyboard", "timezone",
               "network", "mirror")
