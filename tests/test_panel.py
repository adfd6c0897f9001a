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

from dragonfly.app import AppContext, create_app
from dragonfly.cli import build_parser
from dragonfly.config import SETTINGS, Config
from dragonfly.demo import demo_context
from dragonfly.events import EventHub
from dragonfly.fleet import Fleet
from dragonfly.model import STATE_HELP, TRANSITIONS, State
from dragonfly.panel import DOC_PAGES, OPERATOR_ACTIONS, human_bytes
from dragonfly.resources import static_assets
from dragonfly.store import SqliteStore

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
    from dragonfly.app_key import CTX
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
                  m["cpu"]["model"], m["mac"], m["ip"], m["bmc"]["address"], m["bmc"]["vendor"],
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
    for name in OPERATOR_ACTIONS.values():
        used[name] = "dragonfly/panel OPERATOR_ACTIONS"
    assert len(used) > 30
    missing = {name: where for name, where in used.items() if name not in sprite}
    assert not missing, missing


async def test_rendered_icon_references_resolve(client: TestClient) -> None:
    sprite = _sprite_ids()
    for path in PAGES:
        page = await get_html(client, path)
        for name in re.findall(r'<use href="#i-([a-z0-9-]+)"', page):
            assert name in sprite, (path, name)
