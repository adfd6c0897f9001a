"""OS templates: the built-in catalog, validation, TOML files, and the templates API."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dragonfly.config import Config
from dragonfly.context import CTX, AppContext
from dragonfly.domain import catalog as domain_catalog
from dragonfly.domain.events import EventHub
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State
from dragonfly.errors import InvalidInput
from dragonfly.http.errors import error_middleware
from dragonfly.store import SqliteStore
from dragonfly.templates import routes
from dragonfly.templates.catalog import BUILTIN, BUILTIN_BY_SLUG
from dragonfly.templates.model import OsTemplate, parse_template
from dragonfly.templates.registry import TemplateCatalog

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5bWF0ZXJpYWwxMjM0NTY3ODkwYWJjZGVm op@lab"
SHA = "sha256:" + "ab" * 32


def custom(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"slug": "acme-os", "name": "Acme OS", "family": "debian",
                            "url": "https://images.example.com/acme.raw.zst",
                            "format": "raw.zst", "checksum": SHA, "root_label": "root",
                            "default_user": "acme", "ssh_keys": [KEY]}
    data.update(over)
    return data


# --- the built-in catalog -------------------------------------------------------------------

def test_builtin_catalog_has_the_promised_entries() -> None:
    assert [t.slug for t in BUILTIN] == ["debian-12", "debian-13", "ubuntu-22.04",
                                         "ubuntu-24.04", "rocky-9", "rocky-10", "almalinux-9"]


@pytest.mark.parametrize("template", BUILTIN, ids=lambda t: t.slug)
def test_builtin_is_valid_and_complete(template: OsTemplate) -> None:
    assert template.validate() is template
    assert template.builtin and template.read_only and template.source == "builtin"
    assert template.url.startswith("https://") and not template.local_path
    # Every built-in is checked against its vendor's own checksum file, of the right kind.
    expected = {"debian": ("SHA512SUMS", "sha512"), "ubuntu": ("SHA256SUMS", "sha256"),
                "rhel": ("CHECKSUM", "sha256")}[template.family]
    assert template.checksum_url.rsplit("/", 1) == [template.url.rsplit("/", 1)[0],
                                                    expected[0]]
    assert template.checksum_algorithm == expected[1] and not template.checksum
    assert template.checksum_file_name == template.url.rsplit("/", 1)[1]
    assert template.root_label or template.root_parttype or template.root_fstype
    assert template.root_fstype in ("ext4", "xfs")
    assert template.uefi_loader.startswith("\\EFI\\") and template.uefi_loader.endswith(".efi")
    assert template.default_user and template.phone_home_timeout == 1800
    assert template.image_bytes > 1 << 30 and template.disk_bytes_needed >= template.image_bytes


def test_debian_uses_generic_images_with_hardware_drivers() -> None:
    for slug in ("debian-12", "debian-13"):
        url = BUILTIN_BY_SLUG[slug].url
        assert "-generic-amd64" in url and "genericcloud" not in url


def test_domain_catalog_is_a_view_of_the_builtins() -> None:
    assert domain_catalog.TEMPLATES == BUILTIN
    assert domain_catalog.template("debian-12") is BUILTIN_BY_SLUG["debian-12"]
    assert domain_catalog.template("rocky-9").image_bytes > 0
    with pytest.raises(InvalidInput, match="unknown OS template"):
        domain_catalog.template("windows-95")
    for t in domain_catalog.TEMPLATES:  # what the panel and the demo read
        data = t.to_dict()
        assert {"slug", "name", "family", "image_bytes"} <= set(data)


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize(("over", "field", "words"), [
    ({"slug": "Bad Slug!"}, "slug", "is not a slug"),
    ({"format": "vmdk"}, "format", "is not one of raw"),
    ({"checksum": ""}, "checksum", "missing"),
    ({"checksum": "md5:abc"}, "checksum", "sha256"),
    ({"checksum_url": "https://x.example/SUMS"}, "checksum", "not both"),
    ({"url": "ftp://example.com/a.raw"}, "url", "not an http(s) URL"),
    ({"url": "not a url"}, "url", "not an http(s) URL"),
    ({"url": "", "local_path": "relative/a.raw"}, "local_path", "absolute path"),
    ({"local_path": "/srv/a.raw"}, "url", "exactly one of"),
    ({"user_data": "#cloud-config\nruncmd:\n  - {{ name }\n"}, "user_data", "line 3"),
    ({"user_data": "#cloud-config\nchpasswd: {list: 'root:x'}\n"}, "user_data", "plaintext"),
    ({"phone_home_timeout": 10}, "phone_home_timeout", "out of range"),
    ({"phone_home_timeout": 200_000}, "phone_home_timeout", "out of range"),
    ({"root_label": ""}, "root", "no way to find the root filesystem"),
    ({"root_parttype": "not-a-guid"}, "root_parttype", "GPT type GUID"),
    ({"uefi_loader": "/EFI/debian/shimx64.efi"}, "uefi_loader", "backslashes"),
    ({"default_user": "Root User"}, "default_user", "not a user name"),
    ({"ssh_keys": ["hunter2"]}, "ssh_keys[0]", "OpenSSH public key"),
    ({"kernel_args": "console=ttyS0 init=\"$(reboot)\""}, "kernel_args", "not accepted: \" $"),
    ({"family": "windows"}, "family", "is not one of"),
])
def test_validation_names_the_field_and_the_reason(over: dict[str, Any], field: str,
                                                   words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_template(custom(**over))
    assert field in caught.value.detail["errors"], caught.value.message
    assert words in caught.value.detail["errors"][field]
    assert words in caught.value.message


def test_validation_refuses_wrong_types_and_unknown_fields() -> None:
    with pytest.raises(InvalidInput, match="unknown template field: colour"):
        parse_template(custom(colour="blue"))
    with pytest.raises(InvalidInput, match="phone_home_timeout: must be a whole number"):
        parse_template(custom(phone_home_timeout="30m"))
    with pytest.raises(InvalidInput, match="builtin cannot be set"):
        parse_template(custom(builtin=True))
    with pytest.raises(InvalidInput, match="differs"):
        parse_template(custom(), slug="other")


def test_a_custom_template_round_trips() -> None:
    template = parse_template(custom(user_data="#cloud-config\npackages: [htop]\n",
                                     phone_home_timeout=3600, local_path="/srv/acme.raw",
                                     url=""))
    again = parse_template(template.stored(), slug=template.slug)
    assert again == template
    assert template.to_dict()["read_only"] is False
    assert dataclasses.replace(template, checksum="").to_dict()["checksum"] == ""


# --- files in the state dir -----------------------------------------------------------------

TOML = '''
name = "Acme from a file"
family = "rhel"
url = "https://images.example.com/acme.qcow2"
format = "qcow2"
checksum_url = "https://images.example.com/CHECKSUM"
root_fstype = "xfs"
user_data = """
#cloud-config
runcmd:
  - echo {{ name }}
"""
'''


async def test_file_templates_load_and_bad_files_are_reported(tmp_path: Path) -> None:
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "acme-file.toml").write_text(TOML)
    (directory / "broken.toml").write_text("name = \n")
    (directory / "debian-12.toml").write_text(TOML)
    (directory / "no-checksum.toml").write_text(TOML.replace("checksum_url", "# none"))
    store = SqliteStore(":memory:")
    await store.open()
    try:
        templates = TemplateCatalog(store, tmp_path)
        result = await templates.reload()
        assert result["loaded"] == ["acme-file"]
        errors = {Path(e["path"]).name: e["error"] for e in result["errors"]}
        assert set(errors) == {"broken.toml", "debian-12.toml", "no-checksum.toml"}
        assert "built-in" in errors["debian-12.toml"]
        assert "checksum: missing" in errors["no-checksum.toml"]
        found = await templates.get("acme-file")
        assert found.source == "file" and found.source_path.endswith("acme-file.toml")
        assert found.read_only
        assert [t.slug for t in await templates.list()][-1] == "acme-file"
    finally:
        await store.close()


# --- the API --------------------------------------------------------------------------------

@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "acme-file.toml").write_text(TOML)
    store = SqliteStore(":memory:")
    fleet = Fleet(store)
    ctx = AppContext(config=Config.defaults(), store=store, fleet=fleet,
                     events=EventHub(store), demo=False)
    ctx.templates = TemplateCatalog(store, tmp_path)
    app = web.Application(middlewares=[error_middleware])
    app[CTX] = ctx
    for route in routes.api.routes:
        app.router.add_route(route.method, route.path, route.handler)

    async def lifecycle(app: web.Application) -> Any:
        await store.open()
        await fleet.start()
        await ctx.templates.reload()
        await fleet.add_machine(Machine(id="m1", name="web01.example.com", state=State.READY,
                                        mac="52:54:00:00:00:01", macs=["52:54:00:00:00:01"],
                                        nics=[{"name": "eth0", "mac": "52:54:00:00:00:01"}],
                                        ip="10.0.0.5", tags=["rack-a1"], role="web"),
                                "test machine")
        yield
        fleet.stop()
        await store.close()

    app.cleanup_ctx.append(lifecycle)
    result: TestClient = await aiohttp_client(app)
    return result


async def test_api_lists_builtin_file_and_custom_templates(client: TestClient) -> None:
    response = await client.post("/api/templates", json=custom())
    assert response.status == 201, await response.text()
    listed = await (await client.get("/api/templates")).json()
    sources = {t["slug"]: t["source"] for t in listed}
    assert sources["debian-12"] == "builtin" and sources["acme-file"] == "file"
    assert sources["acme-os"] == "api"
    one = await (await client.get("/api/templates/acme-os")).json()
    assert one["ssh_keys"] == [KEY] and one["read_only"] is False
    assert (await client.get("/api/templates/nope")).status == 404


async def test_api_validates_with_clear_errors(client: TestClient) -> None:
    response = await client.post("/api/templates", json=custom(format="vmdk", checksum=""))
    assert response.status == 400
    body = await response.json()
    assert "format" in body["detail"]["errors"] and "checksum" in body["detail"]["errors"]
    assert "vmdk" in body["error"]
    again = await client.post("/api/templates", json=custom())
    assert again.status == 201
    duplicate = await client.post("/api/templates", json=custom())
    assert duplicate.status == 409


async def test_api_refuses_to_change_builtin_and_file_templates(client: TestClient) -> None:
    for slug, reason in (("debian-12", "built-in"), ("acme-file", "acme-file.toml")):
        put = await client.put(f"/api/templates/{slug}", json=custom(slug=slug))
        assert put.status == 409 and reason in (await put.json())["error"]
        delete = await client.delete(f"/api/templates/{slug}")
        assert delete.status == 409 and reason in (await delete.json())["error"]
    shadow = await client.post("/api/templates", json=custom(slug="ubuntu-24.04"))
    assert shadow.status == 409


async def test_api_put_replaces_and_delete_removes(client: TestClient) -> None:
    put = await client.put("/api/templates/acme-os", json=custom(name="Acme 2"))
    assert put.status == 200 and (await put.json())["name"] == "Acme 2"
    put = await client.put("/api/templates/acme-os", json=custom(name="Acme 3"))
    assert (await (await client.get("/api/templates/acme-os")).json())["name"] == "Acme 3"
    assert (await client.delete("/api/templates/acme-os")).status == 200
    assert (await client.get("/api/templates/acme-os")).status == 404
    assert (await client.delete("/api/templates/acme-os")).status == 404


async def test_api_reload_reads_new_files(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "templates" / "later.toml").write_text(TOML)
    answer = await (await client.post("/api/templates/reload")).json()
    assert answer == {"loaded": ["acme-file", "later"], "errors": []}
    assert (await client.get("/api/templates/later")).status == 200


async def test_api_preview_renders_the_seed(client: TestClient) -> None:
    response = await client.post("/api/templates/acme-file/preview", json={
        "machine_id": "m1", "options": {"ssh_keys": [KEY], "disk": ""}})
    assert response.status == 200, await response.text()
    files = await response.json()
    assert set(files) == {"meta-data", "user-data", "network-config"}
    assert '"instance-id": "preview"' in files["meta-data"]
    assert "/api/phone-home/preview" in files["user-data"]
    assert "echo web01.example.com" in files["user-data"]  # the file's jinja2 user-data
    bad = await client.post("/api/templates/acme-file/preview", json={
        "machine_id": "m1", "options": {"user_data": "#cloud-config\nx: {{ nope }}\n"}})
    assert bad.status == 400 and "line 2" in (await bad.json())["error"]
    missing = await client.post("/api/templates/acme-file/preview", json={"machine_id": "zz"})
    assert missing.status == 404
