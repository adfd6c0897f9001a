"""An OS template: where its image comes from, how to check it, how to find its root
filesystem once written, and how the installed OS is greeted (user, keys, cloud-init).

Plain data plus ``validate()``. Templates come from three places (the built-in catalog, TOML
files in the state dir, the API) and all three go through ``parse_template``, so a file and
an API call are refused with the same sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from dragonfly.errors import InvalidInput
from dragonfly.templates.render import check_syntax, password_problem

# How the image is published (names dragonfly.images.formats.parse_kind reads). The agent
# streams raw, gz, xz and zst (docs/deployment-protocol.md); the image store turns qcow2 and
# tarballs (Debian's tar.xz holds one disk.raw) into raw before a machine ever sees them.
FORMATS: tuple[str, ...] = ("raw", "raw.gz", "raw.xz", "raw.zst", "qcow2", "tar", "tar.gz",
                            "tar.xz", "tar.zst")
FAMILIES: tuple[str, ...] = ("debian", "ubuntu", "rhel", "fedora", "suse", "other")
ARCHES: tuple[str, ...] = ("x86_64", "aarch64")
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}  # hex digits of each digest
ROOT_FSTYPES: tuple[str, ...] = ("", "ext4", "xfs", "btrfs")
SOURCES = ("builtin", "file", "api")

PHONE_HOME_DEFAULT = 30 * 60  # seconds; the "default 30 min"
PHONE_HOME_MIN, PHONE_HOME_MAX = 60, 24 * 3600
USER_DATA_MAX = 64 * 1024
MAX_KEYS = 64

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_LOADER = re.compile(r"^(\\[A-Za-z0-9._-]+)+\.efi$", re.IGNORECASE)
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com")
_KEY = re.compile(r"^(?:" + "|".join(re.escape(t) for t in _KEY_TYPES)
                  + r") [A-Za-z0-9+/]+={0,3}(?: [^\n\r]{0,200})?$")


@dataclass(frozen=True)
class OsTemplate:
    slug: str
    name: str
    family: str
    version: str = ""
    arch: str = "x86_64"
    # The image: a URL (http/https) or, for custom templates, an absolute path on this server.
    url: str = ""
    local_path: str = ""
    format: str = "qcow2"
    # The checksum: either explicit ("sha256:HEX"), or the vendor's checksum file, the
    # algorithm it uses and the name to look up in it (default: the last part of ``url``).
    checksum: str = ""
    checksum_url: str = ""
    checksum_algorithm: str = "sha256"
    checksum_name: str = ""
    # Finding the root filesystem after writing, never by partition number (the agent tries
    # GPT partition label, then type GUID, then filesystem label, then the largest of fstype).
    root_label: str = ""
    root_parttype: str = ""
    root_fstype: str = ""
    uefi_loader: str = ""  # on the ESP, for the boot-entry action: \EFI\debian\shimx64.efi
    default_user: str = ""
    ssh_keys: tuple[str, ...] = ()
    kernel_args: str = ""
    user_data: str = ""  # jinja2 over the machine's facts (see templates/seed.py)
    phone_home_timeout: int = PHONE_HOME_DEFAULT
    # Approximate sizes: the raw bytes written to disk (progress, ETA, the demo) and the
    # smallest disk the image fits on (select-disk's min_bytes; 0 = image_bytes).
    image_bytes: int = 0
    min_disk_bytes: int = 0
    description: str = ""
    builtin: bool = False
    source: str = "api"  # "builtin", "file" or "api": where this template was defined
    source_path: str = ""  # the TOML file of a file template

    @property
    def image_source(self) -> str:
        return self.url or self.local_path

    @property
    def checksum_file_name(self) -> str:
        """The entry to look up in ``checksum_url``'s file."""
        return self.checksum_name or self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def disk_bytes_needed(self) -> int:
        return max(self.min_disk_bytes, self.image_bytes)

    @property
    def read_only(self) -> bool:
        """Built-ins and file templates cannot be changed through the API."""
        return self.source != "api"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["ssh_keys"] = list(self.ssh_keys)
        data["read_only"] = self.read_only
        data["min_disk_bytes"] = self.disk_bytes_needed
        return data

    def stored(self) -> dict[str, Any]:
        """What the store keeps of an API template: its definition, not where it came from."""
        data = self.to_dict()
        for key in ("builtin", "source", "source_path", "read_only"):
            data.pop(key)
        data["min_disk_bytes"] = self.min_disk_bytes
        return data

    def validate(self) -> OsTemplate:
        """Return self, or raise InvalidInput naming every field that is wrong and why."""
        errors = _problems(self)
        if errors:
            what = f"template {self.slug!r}" if isinstance(self.slug, str) else "template"
            raise InvalidInput(f"{what} is invalid: " + "; ".join(
                f"{key}: {message}" for key, message in errors.items()), {"errors": errors})
        return self


_FIELDS = {f.name: f for f in fields(OsTemplate)}
# Set by where the template came from, never by its author.
_ORIGIN = ("builtin", "source", "source_path")
_INTS = ("phone_home_timeout", "image_bytes", "min_disk_bytes")


def parse_template(data: object, *, source: str = "api", source_path: str = "",
                   slug: str | None = None) -> OsTemplate:
    """A validated template from JSON or TOML data (the API, a file). ``slug`` is the file's
    name or the URL's, used when the data names none; a different one in the data is refused."""
    if not isinstance(data, dict):
        raise InvalidInput("a template must be an object (JSON) or a table (TOML)")
    data = {k: v for k, v in data.items() if k != "read_only"}  # echoed back by GET: harmless
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown template field{'s' if len(unknown) > 1 else ''}: "
                           f"{', '.join(unknown)}", {"known": sorted(set(_FIELDS) - set(_ORIGIN))})
    origin = [k for k in _ORIGIN if k in data and source != "builtin"]
    if origin:
        raise InvalidInput(f"{', '.join(origin)} cannot be set: it says where a template comes "
                           "from")
    if slug is not None:
        if data.get("slug", slug) != slug:
            raise InvalidInput(f"the slug in the body ({data['slug']!r}) differs from {slug!r}")
        data["slug"] = slug
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in data.items():
        if key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                errors[key] = "must be a whole number"
                continue
        elif key == "ssh_keys":
            if not isinstance(value, list | tuple) or not all(isinstance(k, str) for k in value):
                errors[key] = "must be a list of public keys (strings)"
                continue
            value = tuple(k.strip() for k in value)
        elif key in _ORIGIN:
            pass
        elif not isinstance(value, str):
            errors[key] = "must be text"
            continue
        values[key] = value
    for required in ("slug", "name", "family"):
        if required not in data:
            errors[required] = "is required"
    if errors:
        raise InvalidInput("template is invalid: " + "; ".join(
            f"{k}: {m}" for k, m in errors.items()), {"errors": errors})
    values.setdefault("builtin", source == "builtin")
    values["source"], values["source_path"] = source, source_path
    return OsTemplate(**values).validate()


def with_source(template: OsTemplate, source: str, source_path: str = "") -> OsTemplate:
    return replace(template, source=source, source_path=source_path,
                   builtin=source == "builtin")


# --- the checks -----------------------------------------------------------------------------

def _text_ok(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"at most {limit} characters"
    if not value.isprintable():
        return "must be printable text on one line"
    return None


def _kernel_args_problem(value: str) -> str | None:
    """The agent appends the arguments to GRUB's and the boot loader spec's kernel lines and
    to ``GRUB_CMDLINE_LINUX``: quotes, backslashes, ``$`` and backquotes would change what
    those files mean, so they are refused rather than escaped."""
    bad = sorted({c for c in value if c in "\"'`$\\;"})
    if bad:
        return ("kernel arguments are plain words separated by spaces (console=ttyS0,115200 "
                f"net.ifnames=0); these characters are not accepted: {' '.join(bad)}")
    return None


def _url_problem(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value[:80]!r} is not an http(s) URL"
    if any(c.isspace() for c in value) or len(value) > 2048:
        return "a URL has no spaces and at most 2048 characters"
    return None


def _problems(t: OsTemplate) -> dict[str, str]:
    e: dict[str, str] = {}
    if not _SLUG.match(t.slug):
        e["slug"] = (f"{t.slug[:70]!r} is not a slug: 1-63 characters, lower-case letters, "
                     "digits, '.', '_' and '-', starting with a letter or digit")
    for key, limit in (("name", 80), ("version", 32), ("description", 500)):
        problem = _text_ok(getattr(t, key), limit)
        if problem:
            e[key] = problem
    if not t.name.strip():
        e["name"] = "is required"
    if t.family not in FAMILIES:
        e["family"] = f"{t.family!r} is not one of {', '.join(FAMILIES)}"
    if t.arch not in ARCHES:
        e["arch"] = f"{t.arch!r} is not one of {', '.join(ARCHES)}"
    _image_problems(t, e)
    _checksum_problems(t, e)
    _locator_problems(t, e)
    if t.uefi_loader and (len(t.uefi_loader) > 255 or not _LOADER.match(t.uefi_loader)):
        e["uefi_loader"] = (f"{t.uefi_loader[:80]!r} is not a loader path on the ESP, e.g. "
                            r"\EFI\debian\shimx64.efi (backslashes, ending in .efi)")
    if t.default_user and not _USER.match(t.default_user):
        e["default_user"] = (f"{t.default_user[:40]!r} is not a user name: up to 32 lower-case "
                             "letters, digits, '_' and '-', not starting with a digit")
    if len(t.ssh_keys) > MAX_KEYS:
        e["ssh_keys"] = f"at most {MAX_KEYS} keys"
    for i, key in enumerate(t.ssh_keys):
        problem = ssh_key_problem(key)
        if problem:
            e[f"ssh_keys[{i}]"] = problem
            break
    problem = _text_ok(t.kernel_args, 1024) or _kernel_args_problem(t.kernel_args)
    if problem:
        e["kernel_args"] = problem
    if len(t.user_data) > USER_DATA_MAX:
        e["user_data"] = f"at most {USER_DATA_MAX} bytes"
    else:
        problem = check_syntax(t.user_data) or password_problem(t.user_data)
        if problem:
            e["user_data"] = problem
    if not PHONE_HOME_MIN <= t.phone_home_timeout <= PHONE_HOME_MAX:
        e["phone_home_timeout"] = (f"{t.phone_home_timeout} s is out of range: between "
                                   f"{PHONE_HOME_MIN} s and {PHONE_HOME_MAX} s (24 h)")
    for key in ("image_bytes", "min_disk_bytes"):
        if not 0 <= getattr(t, key) <= 1 << 50:
            e[key] = "must be between 0 and 1 PiB"
    if t.source not in SOURCES:
        e["source"] = f"unknown source {t.source!r}"
    return e


def _image_problems(t: OsTemplate, e: dict[str, str]) -> None:
    if bool(t.url) == bool(t.local_path):
        e["url"] = "give the image as exactly one of url (http/https) or local_path"
    elif t.url:
        problem = _url_problem(t.url)
        if problem:
            e["url"] = problem
    elif not t.local_path.startswith("/") or "/../" in t.local_path + "/" \
            or not t.local_path.isprintable() or len(t.local_path) > 1024:
        e["local_path"] = f"{t.local_path[:80]!r} is not an absolute path on this server"
    elif t.builtin:
        e["local_path"] = "built-in templates download from their vendor"
    if t.format not in FORMATS:
        e["format"] = f"{t.format!r} is not one of {', '.join(FORMATS)}"


def _checksum_problems(t: OsTemplate, e: dict[str, str]) -> None:
    if t.checksum and t.checksum_url:
        e["checksum"] = "give either checksum (\"sha256:HEX\") or checksum_url, not both"
    elif t.checksum:
        algorithm, _, digest = t.checksum.partition(":")
        if algorithm not in ALGORITHMS or not _HEX.match(digest) \
                or len(digest) != ALGORITHMS[algorithm]:
            e["checksum"] = ("must be \"sha256:\" and 64 hex digits or \"sha512:\" and 128 "
                             "(lower case)")
    elif t.checksum_url:
        problem = _url_problem(t.checksum_url)
        if problem:
            e["checksum_url"] = problem
        elif not t.checksum_file_name:
            e["checksum_name"] = "name the entry to look up in the checksum file"
    else:
        e["checksum"] = ("missing: give checksum (\"sha256:HEX\") or the vendor's checksum "
                         "file as checksum_url (with checksum_algorithm)")
    if t.checksum_algorithm not in ALGORITHMS:
        e["checksum_algorithm"] = f"must be one of {', '.join(ALGORITHMS)}"
    problem = _text_ok(t.checksum_name, 255)
    if problem or "/" in t.checksum_name:
        e["checksum_name"] = problem or "a file name, not a path"


def _locator_problems(t: OsTemplate, e: dict[str, str]) -> None:
    if not (t.root_label or t.root_parttype or t.root_fstype):
        e["root"] = ("no way to find the root filesystem: give root_label, root_parttype or "
                     "root_fstype")
    if t.root_label and (len(t.root_label) > 36 or not t.root_label.isprintable()):
        e["root_label"] = "a partition or filesystem label: printable, at most 36 characters"
    if t.root_parttype and not _GUID.match(t.root_parttype):
        e["root_parttype"] = (f"{t.root_parttype[:40]!r} is not a GPT type GUID in lower case, "
                              "e.g. 4f68bce3-e8cd-4db1-96e7-fbcaf984b709")
    if t.root_fstype not in ROOT_FSTYPES:
        e["root_fstype"] = f"must be one of {', '.join(f for f in ROOT_FSTYPES if f)}"


def ssh_key_problem(key: str) -> str | None:
    if len(key) > 16 * 1024:
        return "a public key is at most 16 KiB"
    if not _KEY.match(key):
        return (f"{key[:30]!r}... is not an OpenSSH public key line "
                f"({', '.join(_KEY_TYPES[:3])}, ...)")
    return None


def validate_ssh_keys(value: object, where: str = "ssh_keys") -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(f"{where} must be a list of OpenSSH public keys")
    if len(value) > MAX_KEYS:
        raise InvalidInput(f"{where}: at most {MAX_KEYS} keys")
    keys = tuple(dict.fromkeys(k.strip() for k in value))
    for i, key in enumerate(keys):
        problem = ssh_key_problem(key)
        if problem:
            raise InvalidInput(f"{where}[{i}]: {problem}")
    return keys


__all__ = ["ALGORITHMS", "FAMILIES", "FORMATS", "PHONE_HOME_DEFAULT", "OsTemplate",
           "parse_template", "ssh_key_problem", "validate_ssh_keys", "with_source"]
