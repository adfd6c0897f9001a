"""Tinkerbell's CRD schemas, and a check of every object Dragonfly sends against them.

The CRDs ship as package data (``crds/``, copied unchanged from Tinkerbell's
``crd/bases/v1alpha1``; see crds/README.md), so the check runs on the installed server before
each request: a bad template becomes a readable error in the panel, not a 422 from the API
server. The check is the structural part of OpenAPI v3 that CRDs use (types, properties,
required, additionalProperties, items, enum, pattern, maxProperties, anyOf, int-or-string,
formats int64/uri/date-time). ``x-kubernetes-validations`` (CEL rules) are not evaluated;
nothing Dragonfly generates sets the fields they constrain.

Unknown fields are errors here, where the API server would silently prune them: a pruned field
is a setting Tinkerbell never sees. ``metadata`` is checked as Kubernetes checks ObjectMeta
names and labels.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from dragonfly.errors import InvalidInput

GROUP = "tinkerbell.org"
BMC_GROUP = "bmc.tinkerbell.org"
VERSION = "v1alpha1"
# kind -> (CRD file, plural)
KINDS: dict[str, tuple[str, str]] = {
    "Hardware": ("tinkerbell.org_hardware.yaml", "hardware"),
    "Template": ("tinkerbell.org_templates.yaml", "templates"),
    "Workflow": ("tinkerbell.org_workflows.yaml", "workflows"),
    "Job": ("bmc.tinkerbell.org_jobs.yaml", "jobs"),
    "Task": ("bmc.tinkerbell.org_tasks.yaml", "tasks"),
    "Machine": ("bmc.tinkerbell.org_machines.yaml", "machines"),
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
INT64 = (-(2**63), 2**63 - 1)


def crd_text(kind: str) -> str:
    return files("dragonfly.tinkerbell").joinpath("crds", KINDS[kind][0]).read_text()


@functools.cache
def crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind`` (read once; blocking: call it in a thread from
    async code the first time, as the backend's start does)."""
    if kind not in KINDS:
        raise KeyError(f"no CRD for kind {kind!r}")
    import yaml  # type: ignore[import-untyped]  # here: only Tinkerbell mode reads CRDs

    doc = yaml.safe_load(crd_text(kind))
    if not isinstance(doc, dict):
        raise ValueError(f"the CRD of {kind} is not a document")
    return doc


def schema_of(kind: str) -> dict[str, Any]:
    for version in crd(kind)["spec"]["versions"]:
        if version["name"] == VERSION:
            return dict(version["schema"]["openAPIV3Schema"])
    raise KeyError(f"the CRD of {kind} has no {VERSION}")


def plural_of(kind: str) -> str:
    return KINDS[kind][1]


def load_all() -> None:
    """Parse every CRD now (so later checks do no file I/O)."""
    for kind in KINDS:
        schema_of(kind)


def problems(obj: Mapping[str, Any], kind: str | None = None) -> list[str]:
    """What is wrong with ``obj`` as a ``kind`` (default: its own ``kind``), one sentence each;
    empty when the API server would accept it."""
    kind = kind or str(obj.get("kind", ""))
    if kind not in KINDS:
        return [f"kind: {kind!r} is not a Tinkerbell kind ({', '.join(KINDS)})"]
    found: list[str] = []
    group = BMC_GROUP if kind in ("Job", "Task", "Machine") else GROUP
    if obj.get("apiVersion") != f"{group}/{VERSION}":
        found.append(f"apiVersion: must be {group}/{VERSION}")
    if obj.get("kind") != kind:
        found.append(f"kind: must be {kind}")
    _metadata(obj.get("metadata"), found)
    check(obj, schema_of(kind), "", found)
    return found


def validate(obj: Mapping[str, Any], kind: str | None = None) -> None:
    """Raise InvalidInput naming every problem of ``obj`` (see ``problems``)."""
    found = problems(obj, kind)
    if found:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise InvalidInput(f"the {kind or obj.get('kind')} {name!r} Dragonfly generated does "
                           f"not fit Tinkerbell's schema: {'; '.join(found[:8])}",
                           {"problems": found})


def _metadata(meta: object, found: list[str]) -> None:
    if not isinstance(meta, dict):
        found.append("metadata: must be an object")
        return
    name = meta.get("name")
    if not isinstance(name, str) or not name or len(name) > 253 \
            or not _DNS_SUBDOMAIN.match(name):
        found.append(f"metadata.name: {name!r} is not a DNS subdomain (lowercase letters, "
                     "digits, '-' and '.', at most 253)")
    for key in ("labels", "annotations"):
        value = meta.get(key, {})
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            found.append(f"metadata.{key}: must map strings to strings")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, name_part = str(key).rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or len(name_part) > 63 \
                or not _LABEL_NAME.match(name_part):
            found.append(f"metadata.labels: {key!r} is not a label name")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            found.append(f"metadata.labels[{key}]: {value!r} is not a label value")


def _type_ok(value: object, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def check(value: object, schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    """Append to ``found`` what is wrong with ``value`` under the structural ``schema``."""
    where = path or "(object)"
    if value is None and schema.get("nullable"):
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (_type_ok(value, "integer") or isinstance(value, str)):
            found.append(f"{where}: must be an integer or a string")
            return
    elif "type" in schema and not _type_ok(value, str(schema["type"])):
        found.append(f"{where}: must be {schema['type']}, not {type(value).__name__}")
        return
    if "anyOf" in schema and all(_sub(value, alt, path) for alt in schema["anyOf"]):
        found.append(f"{where}: matches none of its allowed forms")
        return
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        _string(value, schema, where, found)
    elif isinstance(value, int) and not isinstance(value, bool):
        if schema.get("format") == "int64" and not INT64[0] <= value <= INT64[1]:
            found.append(f"{where}: {value} is out of int64's range")
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                check(item, items, f"{path}[{i}]", found)
    elif isinstance(value, dict):
        _object(value, schema, path, found)


def _sub(value: object, schema: Mapping[str, Any], path: str) -> list[str]:
    found: list[str] = []
    check(value, schema, path, found)
    return found


def _string(value: str, schema: Mapping[str, Any], where: str, found: list[str]) -> None:
    pattern = schema.get("pattern")
    # OpenAPI patterns are unanchored (ECMA-262 search), as the API server applies them.
    if pattern and re.search(pattern, value) is None:
        found.append(f"{where}: {value!r} does not match {pattern}")
    fmt = schema.get("format")
    if fmt == "uri":
        parts = urlsplit(value)
        if not parts.scheme or not (parts.netloc or parts.path):
            found.append(f"{where}: {value!r} is not a URI")
    elif fmt == "date-time" and not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", value):
        found.append(f"{where}: {value!r} is not an RFC 3339 date-time")


def _object(value: dict[str, Any], schema: Mapping[str, Any], path: str,
            found: list[str]) -> None:
    where = path or "(object)"
    props: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    if "maxProperties" in schema and len(value) > int(schema["maxProperties"]):
        found.append(f"{where}: at most {schema['maxProperties']} field(s)")
    for key in schema.get("required", ()):
        if key not in value:
            found.append(f"{path + '.' if path else ''}{key}: is required")
    for key, item in value.items():
        sub = f"{path}.{key}" if path else str(key)
        if key in props:
            if not path and key == "metadata":
                continue  # ObjectMeta: checked by _metadata
            check(item, props[key], sub, found)
        elif isinstance(extra, dict):
            check(item, extra, sub, found)
        elif props and extra is not True and not schema.get(
                "x-kubernetes-preserve-unknown-fields"):
            found.append(f"{sub}: unknown field (Tinkerbell would drop it)")
