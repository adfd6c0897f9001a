"""The HTML panel through aiohttp's test client: pages, their content, assets, and hygiene.

The demo fleet is used with its simulator paused (a tick of an hour), so what the pages show
can be compared with what the JSON API returns at the same moment.
"""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dragonfly.app import create_app
from dragonfly.boot.registry import ARCH_NAMES
from dragonfly.commands import build_parser
from dragonfly.compose import demo_context
from dragonfly.config import SETTINGS, Config
from dragonfly.context import AppContext
from dragonfly.domain.events import STREAM_KINDS, EventHub
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import OPERATOR_ACTIONS, STATE_HELP, TRANSITIONS, State
from dragonfly.format import decimal_bytes as human_bytes
from dragonfly.panel.render import ACTION_ICONS, DOC_PAGES
from dragonfly.resources import static_assets
from dragonfly.store import SqliteStore
from tests.test_auth_fixtures import (
    ANON,
    USER_PASSWORD,
    Who,
    add_user,
    installed_client,
    login,
    setup_admin,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "web" / "templates"
STATIC = ROOT / "web" / "static"
BANNER = ("Demo Mode: Dragonfly is not installed yet. This is a preview — none of your "
          "hardware is touched.")
PAGES = ["/", "/machines", "/tags", "/docs", *(f"/docs/{p}" for p in DOC_PAGES)]


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(demo_context(tick=3600)))


async def get_html(client: TestClient, path: str, status: int = 200) -> str:
    response = await client.get(path)
    assert response.status == status, path
    assert response.content_type == "text/html"
    return await response.text()


async def get_json(client: TestClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, path
    return await response.json()


def text_of(page: str) -> str:
    """The page as text (tags dropped, entities decoded, whitespace squeezed)."""
    without_tags = re.sub(r"<[^>]+>", " ", page)
    return " ".join(html.unescape(without_tags).split())


def page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page,
                      re.S)
    assert match, "page-data missing"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


# --- every page -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
async def test_every_page_renders_with_banner_nav_and_assets(client: TestClient, path: str
                                                              ) -> None:
    page = await get_html(client, path)
    assert BANNER in page
    for button in ("Install Now", "Advanced Setup"):
        assert button in page
    assert 'href="/docs"' in page and 'id="install-dialog"' in page and 'id="setup-dialog"' in page
    for href in ('href="/"', 'href="/machines"', 'href="/tags"', 'href="/docs"'):
        assert href in page
    assert page.count('aria-current="page"') >= 1
    assert 'class="skip-link" href="#main"' in page and 'id="main"' in page
    assert 'id="theme-toggle"' in page and 'id="toasts"' in page
    # Every asset the page links is served, with the cache-busting version it was linked with.
    for url in re.findall(r'(?:href|src)="(/static/[^"]+)"', page):
        response = await client.get(html.unescape(url))
        assert response.status == 200, url
        assert "immutable" in response.headers["Cache-Control"], url
    page_data(page)  # valid JSON


async def test_installed_mode_has_no_demo_banner(aiohttp_client: Any) -> None:
    store = SqliteStore(":memory:")
    ctx = AppContext(config=Config.defaults(), store=store, fleet=Fleet(store),
                     events=EventHub(store), demo=False)
    client = await aiohttp_client(create_app(ctx))
    response = await client.get("/docs")
    page = await response.text()
    # The access-control layer may send an unconfigured instance to its setup page first.
    assert response.status == 200
    assert BANNER not in page and 'id="install-dialog"' not in page


# --- dashboard --------------------------------------------------------------------------------

async def test_dashboard_counts_deployments_and_recent(client: TestClient) -> None:
    stats = await get_json(client, "/api/stats")
    page = await get_html(client, "/")
    for state in State:
        count = stats["states"][state.value]
        assert f'data-count="{state.value}">{count}<' in page
        assert f'href="/machines?state={state.value}"' in page
    assert stats["active_workflows"], "the demo starts with deployments running"
    names = {m["id"]: m["name"] for m in (await get_json(client, "/api/machines"))["items"]}
    for wf in stats["active_workflows"]:
        assert f'data-wf="{wf["id"]}"' in page
        assert names[wf["machine_id"]] in page
        assert f'aria-valuenow="{round(wf["progress"], 1)}"' in page
        assert f'engine-{wf["engine"]}' in page
        assert human_bytes(wf["bytes_total"]) in page
    assert page.count('class="progress running"') >= len(stats["active_workflows"])
    for m in stats["recently_seen"]:
        assert f'href="/machines/{m["id"]}"' in page


# --- machine list -----------------------------------------------------------------------------

async def test_machine_list_shows_the_api_rows(client: TestClient) -> None:
    api = await get_json(client, "/api/machines")
    page = await get_html(client, "/machines")
    rows = re.findall(r'<tr data-id="([0-9a-f]+)"', page)
    assert rows == [m["id"] for m in api["items"]]
    for m in api["items"]:
        assert html.escape(m["name"]) in page and m["mac"] in page
    for state, count in api["states"].items():
        assert f'data-count="{state}">{count}<' in page
    assert f'data-count="">{api["total"]}<' in page
    for key in ("name", "state", "ip", "vendor", "memory", "cpus", "last_seen"):
        assert f'data-sort="{key}"' in page
    assert 'id="select-all"' in page and 'id="bulkbar"' in page
    assert f"Showing {len(api['items'])} of {api['total']}" in page


async def test_machine_list_filters_search_and_sort_from_the_url(client: TestClient) -> None:
    failed = await get_json(client, "/api/machines?state=failed")
    page = await get_html(client, "/machines?state=failed")
    assert re.findall(r'<tr data-id="([0-9a-f]+)"', page) == [m["id"] for m in failed["items"]]
    assert 'data-state="failed" aria-pressed="true"' in page

    target = (await get_json(client, "/api/machines"))["items"][3]
    page = await get_html(client, f"/machines?q={target['serial']}")
    assert re.findall(r'<tr data-id="([0-9a-f]+)"', page) == [target["id"]]
    assert f'value="{target["serial"]}"' in page

    tag = target["tags"][0]
    tagged = await get_json(client, f"/api/machines?tag={tag}")
    page = await get_html(client, f"/machines?tag={tag}")
    assert len(re.findall(r'<tr data-id="', page)) == tagged["total"]
    assert f'<option value="{tag}" selected>' in page

    by_memory = await get_json(client, "/api/machines?sort=memory&order=desc")
    page = await get_html(client, "/machines?sort=memory&order=desc")
    assert re.findall(r'<tr data-id="([0-9a-f]+)"', page) == [m["id"] for m in by_memory["items"]]
    assert 'aria-sort="descending"' in page

    # A mistyped shared link still renders, with the bad parts ignored.
    page = await get_html(client, "/machines?state=bogus&sort=nope&order=up")
    assert len(re.findall(r'<tr data-id="', page)) == 24


async def test_machine_list_renders_only_the_first_page(client: TestClient) -> None:
    from dragonfly.context import CTX
    from dragonfly.demo.fleet import make_machine

    fleet = client.app[CTX].fleet
    import random
    rng = random.Random(1)
    for i in range(130):
        await fleet.add_machine(make_machine(rng, 300 + i, State.READY, f"bulk-{i:03d}", 0.0))
    page = await get_html(client, "/machines")
    assert len(re.findall(r'<tr data-id="', page)) == 100
    assert "Showing 100 of 154" in page
    assert 'id="load-more"' in page and 'id="load-more" hidden' not in page


# --- machine page -----------------------------------------------------------------------------

async def test_machine_page_shows_inventory_and_controls(client: TestClient) -> None:
    row = (await get_json(client, "/api/machines?state=installed"))["items"][0]
    m = await get_json(client, f"/api/machines/{row['id']}")
    page = await get_html(client, f"/machines/{m['id']}")
    text = text_of(page)
    for value in (m["name"], m["vendor"], m["product"], m["serial"], m["smbios_uuid"],
                  m["cpu"]["model"], m["mac"], m["ip"], m["bmc"]["ip"], m["bmc"]["vendor"],
                  m["bmc"]["type"], f'{m["cpu"]["sockets"]} / {m["cpu"]["cores"]} / '
                                    f'{m["cpu"]["threads"]}'):
        assert value in text, value
    assert f'{m["memory_bytes"] // 1024**3} GiB' in text
    for nic in m["nics"]:
        assert nic["mac"] in text and nic["name"] in text
    for disk in m["disks"]:
        assert disk["serial"] in text and disk["model"] in text
        assert human_bytes(disk["size_bytes"]) in text
    assert ("HDD" if m["disks"][0]["rotational"] else "SSD") in text
    for tag in m["tags"]:
        assert f'data-tag="{tag}"' in page and f'aria-label="Remove tag {tag}"' in page
    assert 'id="tag-input"' in page and 'id="role-input"' in page
    assert f'value="{m["role"]}"' in page
    # Exactly the operator actions the lifecycle allows from this state.
    shown = re.findall(r'data-action="([a-z]+)"', page)
    assert shown == [a for a in m["actions"] if a in OPERATOR_ACTIONS]
    assert 'badge state-installed' in page
    # The boot doctor's container is there, empty (hidden by CSS until filled).
    assert re.search(r'<section class="card boot-timeline" id="boot-timeline"[^>]*></section>',
                     page)
    history = await get_json(client, f"/api/machines/{m['id']}/history")
    assert history[0]["message"] in text
    data = page_data(page)
    assert data["machine"]["id"] == m["id"]
    assert [t["name"] for t in data["transitions"]] == [
        t for t in TRANSITIONS if t in OPERATOR_ACTIONS]


async def test_machine_page_shows_the_bmc_the_agent_found(client: TestClient) -> None:
    import dataclasses
    import random

    from dragonfly.context import CTX
    from dragonfly.demo.fleet import make_machine

    machine = make_machine(random.Random(7), 901, State.DISCOVERED, "bmc-found", 0.0)
    machine = dataclasses.replace(machine, bmc={"ip": "10.20.0.5", "interface": "ipmi0",
                                                "mac": "52:54:00:be:ef:09",
                                                "ip_source": "dhcp"})
    await client.app[CTX].fleet.add_machine(machine)
    text = text_of(await get_html(client, f"/machines/{machine.id}"))
    assert "10.20.0.5 (dhcp)" in text and "52:54:00:be:ef:09" in text
    # No OS yet: the empty deployment card says what comes next from this state.
    assert "Adopt it to make it ready, then deploy an OS template." in text
    assert "with the Deploy button" not in text


async def test_failed_machine_shows_reason_and_deploying_machine_its_workflow(
        client: TestClient) -> None:
    failed = (await get_json(client, "/api/machines?state=failed"))["items"][0]
    page = await get_html(client, f"/machines/{failed['id']}")
    assert "Deployment failed" in page
    assert failed["state_reason"] in text_of(page)
    assert 'id="state-reason" role="status" hidden' not in page

    deploying = (await get_json(client, "/api/machines?state=deploying"))["items"][0]
    wf = await get_json(client, f"/api/workflows/{deploying['workflow_id']}")
    page = await get_html(client, f"/machines/{deploying['id']}")
    assert f'data-wf="{wf["id"]}"' in page
    for action in wf["actions"]:
        assert action["name"] in text_of(page)
    assert f'aria-valuenow="{round(wf["progress"], 1)}"' in page
    assert 'data-action=' not in page  # nothing an operator can do while it deploys


async def test_unknown_machine_and_doc_are_friendly_404s(client: TestClient) -> None:
    for path in ("/machines/nope", "/docs/nope"):
        page = await get_html(client, path, status=404)
        assert "This page flew away" in page and 'href="/machines"' in page
        assert BANNER in page


async def test_user_text_is_escaped_everywhere(client: TestClient) -> None:
    row = (await get_json(client, "/api/machines"))["items"][0]
    evil = "</script><img src=x onerror=alert(1)>"
    response = await client.put(f"/api/machines/{row['id']}/tags", json={"tags": [evil]})
    assert response.status == 200
    for path in (f"/machines/{row['id']}", "/machines", "/tags"):
        page = await get_html(client, path)
        assert "<img src=x" not in page, path
        assert html.escape(evil) in page, path
        page_data(page)  # the JSON island was not broken out of


# --- tags -------------------------------------------------------------------------------------

async def test_tags_page_lists_counts_and_links(client: TestClient) -> None:
    tags = await get_json(client, "/api/tags")
    page = await get_html(client, "/tags")
    assert tags
    for tag in tags:
        assert f'<tr data-tag="{tag["name"]}">' in page
        assert f'href="/machines?tag={tag["name"]}"' in page
        assert f'aria-label="{tag["count"]} machines tagged {tag["name"]}">{tag["count"]}<' in page
        assert f'data-rename="{tag["name"]}"' in page and f'data-delete="{tag["name"]}"' in page


# --- docs -------------------------------------------------------------------------------------

async def test_docs_tables_come_from_the_code(client: TestClient) -> None:
    settings = text_of(await get_html(client, "/docs/settings"))
    for s in SETTINGS:
        assert s.key in settings and s.env in settings and s.help in settings
        for choice in s.choices:
            assert choice in settings

    lifecycle = await get_html(client, "/docs/lifecycle")
    rows = re.findall(r"<tr>\s*<td><code>([a-z]+)</code></td>(.*?)</tr>", lifecycle, re.S)
    assert [name for name, _ in rows] == list(TRANSITIONS)
    for name, row in rows:
        t = TRANSITIONS[name]
        sources = re.findall(r'data-state="([a-z]+)"', row)
        assert sources[:-1] == sorted(s.value for s in t.sources) and sources[-1] == t.target
        assert ("pill-danger" in row) == t.destructive
    text = text_of(lifecycle)
    for help_text in STATE_HELP.values():
        assert help_text in text

    api = await get_html(client, "/docs/api")
    spec = await get_json(client, "/api/openapi.json")
    for path, methods in spec["paths"].items():
        for method in methods:
            assert re.search(rf'method-{method}">{method.upper()}</span></td>\s*<td><code '
                             rf'class="breakable">{re.escape(html.escape(path))}</code>', api), \
                (method, path)
    assert 'href="/api/openapi.json"' in api

    cli = text_of(await get_html(client, "/docs/cli"))
    for flag in ("--demo", "--state-dir", "--bind", "--port", "--boot-interface", "--dhcp-mode",
                 "dragonfly serve", "dragonfly status", "dragonfly version"):
        assert flag in cli
    parser = build_parser()  # every subcommand and option the parser knows is documented

    def walk(p: argparse.ArgumentParser, prefix: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    assert f"{prefix} {name}" in cli
                    walk(sub, f"{prefix} {name}")
            elif action.help != argparse.SUPPRESS:
                for flag in action.option_strings:
                    assert flag in cli, (prefix, flag)
    walk(parser, "dragonfly")
    commands = {a for act in parser._actions if isinstance(act, argparse._SubParsersAction)
                for a in act.choices}
    table = re.search(r'id="cli-coming".*?</table>', await get_html(client, "/docs/cli"), re.S)
    coming = text_of(table.group(0)) if table else ""
    for later in ("install", "uninstall", "user", "token"):
        assert (f"dragonfly {later}" in coming) == (later not in commands), later
    install = text_of(await get_html(client, "/docs/install"))
    assert "sudo ./dragonfly install" in install and "/usr/local/bin/dragonfly" in install


async def test_install_dialogs_explain_the_command_and_options(client: TestClient) -> None:
    page = await get_html(client, "/")
    dialog = page[page.index('id="install-dialog"'):page.index('id="setup-dialog"')]
    text = text_of(dialog)
    for fact in ("sudo ./dragonfly install", "/usr/local/bin/dragonfly",
                 "/etc/dragonfly/dragonfly.toml", "/var/lib/dragonfly", "dragonfly.service",
                 "setup token"):
        assert fact in text, fact
    assert 'data-copy="#install-command"' in dialog
    setup = page[page.index('id="setup-dialog"'):]
    for mode in ("native", "simple", "tinkerbell", "distributed"):
        assert f'name="mode" value="{mode}"' in setup
    for dhcp in ("off", "selective", "auto", "full"):
        assert f'name="dhcp" value="{dhcp}"' in setup
    for flag in ("--mode", "--interface", "--dhcp-mode", "--port"):
        assert flag in setup
    assert 'id="adv-command"' in setup


# --- static assets ----------------------------------------------------------------------------

async def test_static_assets_cache_and_revalidate(client: TestClient) -> None:
    asset = static_assets()["app.css"]
    response = await client.get(f"/static/app.css?v={asset.etag}")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = response.headers["ETag"]
    assert etag == f'"{asset.etag}"'
    assert response.content_type == "text/css"

    again = await client.get("/static/app.css", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["Cache-Control"] == "no-cache"
    stale = await client.get("/static/app.css?v=old", headers={"If-None-Match": '"other"'})
    assert stale.status == 200 and stale.headers["Cache-Control"] == "no-cache"
    js = await client.get("/static/app.js")
    assert js.content_type in ("application/javascript", "text/javascript")
    assert (await client.get("/static/nope.js")).status == 404
    assert (await client.get("/static/../pyproject.toml")).status == 404
    favicon = await client.get("/favicon.ico", allow_redirects=False)
    assert favicon.status == 302 and favicon.headers["Location"].startswith("/static/icons/")


# --- hygiene: nothing external, every icon exists ---------------------------------------------

XML_NAMESPACES = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink")
LOCAL = re.compile(r"https?://(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?(?:/|\b)")


def _web_files() -> list[Path]:
    files = [p for p in [*TEMPLATES.rglob("*"), *STATIC.rglob("*")]
             if p.is_file() and p.suffix in (".html", ".js", ".css", ".svg")]
    assert len(files) > 10
    return files


def test_no_external_urls_in_templates_or_static_files() -> None:
    offenders = []
    for path in _web_files():
        text = path.read_text(encoding="utf-8")
        for ns in XML_NAMESPACES:
            text = text.replace(ns, "")
        text = LOCAL.sub("", text)
        for pattern in (r"https?://", r"""["'(]\s*//[a-z0-9]""", r"//cdn", r"@import",
                        r"url\(\s*['\"]?(?!#|data:)[a-z]+:"):
            for match in re.finditer(pattern, text, re.I):
                line = text.count("\n", 0, match.start()) + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert not offenders, offenders


async def test_rendered_pages_load_nothing_from_elsewhere(client: TestClient) -> None:
    for path in PAGES:
        page = await get_html(client, path)
        for url in re.findall(r'(?:src|href|action)="([^"]+)"', page):
            assert url.startswith(("/", "#", "mailto:")) or LOCAL.match(url), (path, url)


def _sprite_ids() -> set[str]:
    sprite = (TEMPLATES / "_sprite.html").read_text(encoding="utf-8")
    ids = re.findall(r'<symbol id="i-([a-z0-9-]+)"', sprite)
    assert len(ids) == len(set(ids)), "duplicate symbol ids"
    return set(ids)


def test_every_icon_used_is_in_the_sprite() -> None:
    sprite = _sprite_ids()
    used: dict[str, str] = {}
    for path in _web_files():
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r"""\bicon\(\s*["']([a-z0-9-]+)["']""", text):
            used[name] = str(path.relative_to(ROOT))
        for name in re.findall(r"""#i-([a-z0-9-]+)""", text):
            used[name] = str(path.relative_to(ROOT))
    assert set(ACTION_ICONS) == set(OPERATOR_ACTIONS)  # every operator action has its icon
    for name in ACTION_ICONS.values():
        used[name] = "dragonfly/panel ACTION_ICONS"
    assert len(used) > 30
    missing = {name: where for name, where in used.items() if name not in sprite}
    assert not missing, missing


async def test_rendered_icon_references_resolve(client: TestClient) -> None:
    sprite = _sprite_ids()
    for path in PAGES:
        page = await get_html(client, path)
        for name in re.findall(r'<use href="#i-([a-z0-9-]+)"', page):
            assert name in sprite, (path, name)


# --- the panel's script: ES modules, no bundler -------------------------------------------------

def _js_modules() -> list[Path]:
    """app.js (the entry), then every module under js/ (the icon check above reads them all)."""
    modules = [STATIC / "app.js", *sorted((STATIC / "js").rglob("*.js"))]
    assert len(modules) > 10
    return modules


def test_js_imports_resolve_and_every_module_is_used() -> None:
    imported: set[Path] = set()
    for path in _js_modules():
        text = path.read_text(encoding="utf-8")
        assert text.count("\nimport ") == len(re.findall(r'^import \{[^}]*\} from "[^"]+";$',
                                                          text, re.M)), path  # one line each
        for spec in re.findall(r'^import .* from "([^"]+)";$', text, re.M):
            assert spec.startswith(("./", "../")) and spec.endswith(".js"), (path, spec)
            assert (path.parent / spec).resolve().is_file(), (path, spec)
            imported.add((path.parent / spec).resolve())
    assert imported == {p.resolve() for p in _js_modules()[1:]}


async def test_import_map_gives_every_module_its_versioned_url(client: TestClient) -> None:
    page = await get_html(client, "/machines")
    match = re.search(r'<script type="importmap">(.*?)</script>', page, re.S)
    assert match, "import map missing"
    imports: dict[str, str] = json.loads(match.group(1))["imports"]
    assert set(imports) == {f"/static/{p.relative_to(STATIC).as_posix()}"
                            for p in _js_modules()[1:]}
    assert page.index('type="importmap"') < page.index('<script type="module"')
    for url, versioned in imports.items():
        assert versioned == f"{url}?v={static_assets()[url.removeprefix('/static/')].etag}"
        response = await client.get(versioned)
        assert response.status == 200 and "immutable" in response.headers["Cache-Control"]
        assert response.content_type in ("application/javascript", "text/javascript"), url


async def test_shared_constants_come_from_python(client: TestClient) -> None:
    data = app_data(await get_html(client, "/"))
    assert data["arch_names"] == {str(code): name for code, name in ARCH_NAMES.items()}
    assert data["stream_kinds"] == list(STREAM_KINDS)
    for path in _js_modules():  # no JS copy of either
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(?:ARCH_NAMES|STREAM_KINDS)\s*=\s*[\[{]", text), path


# --- access control, locks, safety mode and the boot doctor in the pages ----------------------

def app_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="app-data">(.*?)</script>', page, re.S)
    assert match, "app-data missing"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def element(page: str, pattern: str) -> str:
    """The opening tag of the one element matching ``pattern`` (a regex inside the tag)."""
    found = re.findall(rf"<[a-z]+ [^>]*{pattern}[^>]*>", page)
    assert len(found) == 1, (pattern, found)
    return found[0]


def is_hidden(tag: str) -> bool:
    return re.search(r"\shidden(?:[\s>=]|$)", tag) is not None


async def test_safety_banner_follows_safety_mode(client: TestClient) -> None:
    page = await get_html(client, "/")
    assert is_hidden(element(page, 'id="safety-banner"'))
    assert app_data(page)["safety"]["enabled"] is False

    reason = "change freeze <until> Monday"
    response = await client.put("/api/safety", json={"enabled": True, "reason": reason})
    assert response.status == 200
    for path in ("/", "/machines", "/docs"):
        page = await get_html(client, path)
        assert not is_hidden(element(page, 'id="safety-banner"')), path
        text = text_of(page)
        assert ("Safety mode is on: reimage, delete and power actions are disabled. "
                f"Reason: {reason}") in text, path
        assert "<until>" not in page  # escaped
        assert 'href="/admin/security#safety"' in page  # the demo's caller is an admin
        assert app_data(page)["safety"]["reason"] == reason

    # Destructive buttons render switched off, with the reason; the others stay usable.
    row = (await get_json(client, "/api/machines?state=installed"))["items"][0]
    page = await get_html(client, f"/machines/{row['id']}")
    for action in ("reimage", "release"):
        tag = element(page, f'data-action="{action}"')
        assert 'aria-disabled="true"' in tag and "Safety mode is on" in html.unescape(tag)
    assert "aria-disabled" not in element(page, 'data-action="maintenance"')
    assert 'aria-disabled="true"' in element(page, 'data-tool="delete"')

    assert (await client.put("/api/safety", json={"enabled": False})).status == 200
    page = await get_html(client, "/")
    assert is_hidden(element(page, 'id="safety-banner"'))


async def _installed_people(aiohttp_client: Any, **settings: Any
                            ) -> tuple[TestClient, Who, Who]:
    """An installed instance after setup, with its admin and a user "uma", both signed in."""
    installed = await installed_client(aiohttp_client, **settings)
    admin = await setup_admin(installed)
    await add_user(installed, admin, "uma")
    user = await login(installed, "uma", USER_PASSWORD)
    return installed, admin, user


async def _page_as(client: TestClient, who: Who, path: str, status: int = 200) -> str:
    response = await client.get(path, headers=who.headers(), allow_redirects=False)
    assert response.status == status, (who.label, path, response.status)
    return await response.text()


async def test_lock_badge_and_buttons_by_role(aiohttp_client: Any) -> None:
    installed, admin, user = await _installed_people(
        aiohttp_client, **{"security.front_page": "open"})
    listing = await installed.get("/api/machines?state=installed", headers=admin.headers())
    machine = (await listing.json())["items"][0]
    path = f"/machines/{machine['id']}"

    page = await _page_as(installed, admin, path)
    assert is_hidden(element(page, 'id="lock-badge"'))
    assert is_hidden(element(page, 'id="lock-callout"'))
    assert not is_hidden(element(page, 'data-tool="lock"'))
    assert is_hidden(element(page, 'data-tool="unlock"'))
    assert "aria-disabled" not in element(page, 'data-tool="delete"')
    assert "aria-disabled" not in element(page, 'data-action="reimage"')
    assert page_data(page)["lock"] is None

    # A user locks it (users may lock; only admins unlock).
    reason = "prod database, ask Dana"
    response = await installed.put(f"/api/machines/{machine['id']}/lock",
                                   json={"reason": reason}, headers=user.headers())
    assert response.status == 200, await response.text()

    page = await _page_as(installed, admin, path)
    badge = element(page, 'id="lock-badge"')
    assert not is_hidden(badge) and f"Locked by uma: {reason}" in html.unescape(badge)
    callout = element(page, 'id="lock-callout"')
    assert not is_hidden(callout)
    assert reason in text_of(page) and "until you unlock it" in text_of(page)
    assert is_hidden(element(page, 'data-tool="lock"'))
    assert not is_hidden(element(page, 'data-tool="unlock"'))
    for tag in (element(page, 'data-tool="delete"'), element(page, 'data-action="reimage"'),
                element(page, 'data-action="release"')):
        assert 'aria-disabled="true"' in tag and reason in html.unescape(tag), tag
    assert "aria-disabled" not in element(page, 'data-action="maintenance"')
    assert page_data(page)["lock"]["reason"] == reason

    # The user sees the lock, cannot unlock, delete or reimage.
    page = await _page_as(installed, user, path)
    assert not is_hidden(element(page, 'id="lock-badge"'))
    assert "until an administrator unlocks it" in text_of(page)
    assert 'data-tool="unlock"' not in page and 'data-tool="delete"' not in page
    assert is_hidden(element(page, 'data-tool="lock"'))
    assert not re.findall(r'data-action="([a-z]+)"', page)  # every action here needs admin

    # An anonymous reader (front page "open") gets no controls at all.
    page = await _page_as(installed, ANON, path)
    assert not is_hidden(element(page, 'id="lock-badge"'))
    assert 'id="tools"' not in page and "data-action=" not in page
    assert 'id="tag-input"' not in page

    # Lists mark locked machines.
    listing_page = await _page_as(installed, user, "/machines")
    row = re.search(rf'<tr data-id="{machine["id"]}".*?</tr>', listing_page, re.S)
    assert row and 'class="lock-mark"' in row.group(0)
    assert listing_page.count('class="lock-mark"') == 1
    assert page_data(listing_page)["locks"][machine["id"]]["by"] == "uma"

    unlock = await installed.delete(f"/api/machines/{machine['id']}/lock",
                                    headers=admin.headers())
    assert unlock.status == 200
    page = await _page_as(installed, admin, path)
    assert is_hidden(element(page, 'id="lock-badge"'))
    assert "aria-disabled" not in element(page, 'data-action="reimage"')


async def test_admin_nav_account_menu_and_stream_flags(aiohttp_client: Any) -> None:
    installed, admin, user = await _installed_people(aiohttp_client)

    page = await _page_as(installed, admin, "/")
    assert re.search(r'<a class="nav-link" href="/admin/security"[^>]*>.*?Security', page, re.S)
    menu = page[page.index('id="account-menu"'):page.index("</details>")]
    assert "admin" in text_of(menu) and 'href="/account"' in menu
    assert 'href="/account/tokens"' in menu and 'id="menu-logout"' in menu
    assert "data-demo-role" not in menu
    assert f'<meta name="csrf-token" content="{admin.csrf}">' in page
    assert app_data(page)["can"]["admin"] is True
    security = await _page_as(installed, admin, "/admin/security")
    assert 'class="nav-link" href="/admin/security" aria-current="page"' in security
    for href in ("/admin/users", "/admin/audit"):  # People and Audit, reachable from Security
        assert f'href="{href}"' in security

    page = await _page_as(installed, user, "/")
    assert 'href="/admin/security"' not in page and 'href="/admin/users"' not in page
    menu = page[page.index('id="account-menu"'):page.index("</details>")]
    assert "uma" in text_of(menu) and "user" in text_of(menu) and 'id="menu-logout"' in menu
    data = app_data(page)
    assert data["can"]["admin"] is False and data["can"]["read"] is True
    assert data["user"] == {"name": "uma", "role": "user", "via": "session"}

    # Pages for callers who cannot read: named, so app.js opens no event stream there.
    login = await _page_as(installed, ANON, "/login")
    assert page_data(login)["page"] == "login" and app_data(login)["can"]["read"] is False
    assert 'id="menu-logout"' not in login and "/login?next=" in login
    denied = await _page_as(installed, user, "/admin/users", status=403)
    assert page_data(denied)["page"] == "denied"
    assert 'id="safety-banner"' in denied


async def test_demo_account_menu_has_the_role_switcher(client: TestClient) -> None:
    page = await get_html(client, "/")
    menu = page[page.index('id="account-menu"'):page.index("</details>")]
    options = re.findall(r'data-demo-role="([a-z]+)" aria-pressed="(true|false)"', menu)
    assert options == [("admin", "true"), ("user", "false"), ("viewer", "false")]
    assert "anonymous viewer" in text_of(menu) and "menu-logout" not in menu

    response = await client.post("/api/demo/role", json={"role": "user"})
    assert response.status == 200
    page = await get_html(client, "/")
    menu = page[page.index('id="account-menu"'):page.index("</details>")]
    assert re.findall(r'data-demo-role="([a-z]+)" aria-pressed="true"', menu) == ["user"]
    assert 'href="/admin/security"' not in page
    row = (await get_json(client, "/api/machines?state=installed"))["items"][0]
    machine_page = await get_html(client, f"/machines/{row['id']}")
    assert "data-action=" not in machine_page and 'data-tool="lock"' in machine_page


async def test_boot_doctor_data_on_machine_page_and_dashboard(client: TestClient) -> None:
    from dragonfly.boot.log import EXPECTATIONS

    stuck = "3c:ec:ef:4a:19:02"  # the demo's machine that took an offer and went quiet
    discovered = (await get_json(client, "/api/machines?state=discovered"))["items"]
    assert discovered
    m = await get_json(client, f"/api/machines/{discovered[0]['id']}")
    api_boot = await get_json(client, f"/api/machines/{m['id']}/boot")
    assert api_boot and api_boot[0]["steps"][-1]["step"] == "checkin"
    page = await get_html(client, f"/machines/{m['id']}")
    container = element(page, 'id="boot-timeline"')
    assert set(re.search(r'data-macs="([^"]*)"', container).group(1).split()) == {
        m["mac"], *m["macs"]}
    assert re.search(r'<section class="card boot-timeline" id="boot-timeline"[^>]*></section>',
                     page)  # empty: app.js draws it
    data = page_data(page)
    assert [(t["mac"], [s["step"] for s in t["steps"]]) for t in data["boot"]] == [
        (t["mac"], [s["step"] for s in t["steps"]]) for t in api_boot]
    assert data["boot_enabled"] is True and set(data["boot_macs"]) == {m["mac"], *m["macs"]}
    assert data["boot_expect"]["dhcp_offer"] == next(
        e.within for e in EXPECTATIONS if e.after == "dhcp_offer")

    dashboard = await get_html(client, "/")
    assert 'id="boot-card"' in dashboard and "Boot activity" in dashboard
    rows = {r["mac"]: r for r in page_data(dashboard)["boot"]}
    api_rows = {r["mac"]: r for r in await get_json(client, "/api/boot?limit=8")}
    assert set(rows) == set(api_rows) and stuck in rows
    assert rows[stuck]["machine"] is None  # boots, never registered
    assert rows[stuck]["steps"][-1]["detail"]["loader"] == "undionly.kpxe"
    assert rows[m["mac"]]["machine"] == {"id": m["id"], "name": m["name"]}


async def test_pages_without_boot_services_have_no_boot_card(aiohttp_client: Any) -> None:
    ctx = demo_context(tick=3600)
    ctx.services = [s for s in ctx.services if s is not ctx.bootlog]
    ctx.bootlog = None
    client = await aiohttp_client(create_app(ctx))
    page = await get_html(client, "/")
    assert 'id="boot-card"' not in page and page_data(page)["boot_enabled"] is False
    row = (await get_json(client, "/api/machines"))["items"][0]
    page = await get_html(client, f"/machines/{row['id']}")
    assert page_data(page)["boot"] == [] and "data-disabled" in element(page, 'id="boot-timeline"')


async def test_dashboard_marks_locked_machines(client: TestClient) -> None:
    recent = (await get_json(client, "/api/stats"))["recently_seen"]
    locked, other = recent[0], recent[1]
    response = await client.put(f"/api/machines/{locked['id']}/lock", json={"reason": "hold"})
    assert response.status == 200
    page = await get_html(client, "/")
    rows = dict(re.findall(r'<li class="recent" data-id="([0-9a-f]+)">(.*?)</li>', page, re.S))
    assert 'class="lock-mark"' in rows[locked["id"]] and "hold" in rows[locked["id"]]
    assert 'class="lock-mark"' not in rows[other["id"]]
    assert set(page_data(page)["locks"]) == {locked["id"]}


async def test_agent_buttons_follow_the_agent_the_guard_and_the_role(aiohttp_client: Any
                                                                      ) -> None:
    from tests.test_agent_checkin import report_body

    installed, admin, user = await _installed_people(aiohttp_client)
    installed_row = (await (await installed.get("/api/machines?state=installed",
                                                headers=admin.headers())).json())["items"][0]
    page = await _page_as(installed, admin, f"/machines/{installed_row['id']}")
    assert is_hidden(element(page, 'id="agent-tools"'))  # boots its own disk: no agent there

    # A machine whose agent has not reported: buttons off, saying why.
    registered = await installed.post("/api/machines", json={"mac": "52:54:00:12:34:56"},
                                      headers=admin.headers())
    machine_id = (await registered.json())["id"]
    path = f"/machines/{machine_id}"
    page = await _page_as(installed, admin, path)
    assert not is_hidden(element(page, 'id="agent-tools"'))
    for command in ("reboot", "poweroff", "localboot"):
        tag = element(page, f'data-agent-command="{command}"')
        assert 'aria-disabled="true"' in tag
        assert "No discovery agent has reported" in html.unescape(tag)
    assert is_hidden(element(page, "data-agent-cancel"))
    assert page_data(page)["agent"]["live"] is False

    # Its agent checks in: the buttons are on, and the fact line says it waits.
    checkin = await installed.post("/api/agent/checkin", json=report_body())
    assert (await checkin.json())["machine_id"] == machine_id
    page = await _page_as(installed, admin, path)
    assert "aria-disabled" not in element(page, 'data-agent-command="reboot"')
    assert "waiting" in text_of(page[page.index('data-field="agent"'):][:400])
    queued = await installed.post(f"/api/machines/{machine_id}/agent/commands",
                                  json={"command": "reboot"}, headers=admin.headers())
    assert queued.status == 202
    page = await _page_as(installed, admin, path)
    assert not is_hidden(element(page, "data-agent-cancel"))
    assert "reboot queued" in text_of(page)
    assert page_data(page)["agent"]["pending"]["command"] == "reboot"

    # Safety mode turns them off with its reason, like every power action.
    await installed.put("/api/safety", json={"enabled": True, "reason": "audit week"},
                        headers=admin.headers())
    page = await _page_as(installed, admin, path)
    tag = html.unescape(element(page, 'data-agent-command="poweroff"'))
    assert 'aria-disabled="true"' in tag and "Safety mode is on" in tag and "audit week" in tag

    # Users cannot control power: no buttons at all.
    page = await _page_as(installed, user, path)
    assert 'id="agent-tools"' not in page and "data-agent-command" not in page
