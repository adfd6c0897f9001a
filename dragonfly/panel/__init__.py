"""The HTML panel: server-rendered pages over the same data the JSON API returns.

Pages render the first screenful on the server (fast first paint, works without JS) and
``web/static/app.js`` keeps them live from ``/api/events``. Each page also embeds the data its
script needs as JSON (``page_data``), so the script never re-fetches what the server just sent.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2
from aiohttp import web

from dragonfly import __version__, catalog
from dragonfly.agent.checkin import LOCALBOOT_IN, agent_status
from dragonfly.agent.routes import agent_settings
from dragonfly.api.boot import boot_edge_status
from dragonfly.app_key import ctx_of
from dragonfly.auth import SAFETY_STATE_KEY, USER_KEY, lock_of
from dragonfly.auth.guard import all_locks
from dragonfly.boot.registry import ARCH_NAMES
from dragonfly.bootlog import EXPECTATIONS, BootLog
from dragonfly.config import DHCP_MODES, MODES, SETTINGS
from dragonfly.errors import NotFound
from dragonfly.events import STREAM_KINDS
from dragonfly.fleet import SORT_KEYS, Fleet, summary
from dragonfly.model import STATE_HELP, TRANSITIONS, Machine, State, allowed_transitions
from dragonfly.resources import static_assets

PANEL_ENV = web.AppKey("dragonfly_panel_env", jinja2.Environment)

DOC_PAGES: dict[str, str] = {
    "index": "Getting started",
    "install": "Installing",
    "lifecycle": "Machine lifecycle",
    "settings": "Settings",
    "api": "API",
    "cli": "Command line",
}

# The lifecycle actions an operator may take from the panel (the others are taken by the
# workflow engine and the agent), each with its sprite icon. Tests check every icon exists.
OPERATOR_ACTIONS: dict[str, str] = {
    "adopt": "check-circle",
    "deploy": "download",
    "reimage": "refresh",
    "release": "undo",
    "maintenance": "pause-circle",
    "resume": "play-circle",
}
# Actions whose confirmation asks the operator to type the machine's name (they wipe a disk
# that holds an installed OS).
TYPE_TO_CONFIRM = ("reimage", "release")
# Actions that safety mode and node locks refuse (the API answers 423): their buttons are
# shown disabled, with the reason, while either is on.
DESTRUCTIVE_ACTIONS = tuple(a for a in OPERATOR_ACTIONS if TRANSITIONS[a].destructive)
# What an admin can tell a machine's discovery agent (POST /api/machines/{id}/agent/commands):
# (command, button label, sprite icon, tooltip). Power actions: guarded like the ones above.
AGENT_COMMANDS = (
    ("reboot", "Reboot", "refresh", "Tell the discovery agent to reboot this machine"),
    ("poweroff", "Power off", "power", "Tell the discovery agent to power this machine off"),
    ("localboot", "Boot disk", "disk",
     "Tell the discovery agent to reboot this machine so it boots its local disk"),
)
# States whose machines boot their own disk: no agent there, so no agent buttons.
NO_AGENT_STATES = tuple(s.value for s in LOCALBOOT_IN)

# How long the boot doctor waits after each step before it diagnoses a stall, so a page can ask
# again when a diagnosis may have appeared (the store is not written when only time passes).
# DHCP discovers without an offer are diagnosed after 10 s, counted from the first discover.
BOOT_EXPECT: dict[str, float] = {"dhcp_discover": 10.0,
                                 **{e.after: e.within for e in EXPECTATIONS}}
BOOT_ROWS = 8  # the dashboard's Boot activity card

SAFETY_OFF: dict[str, Any] = {"enabled": False, "reason": "", "by": "", "since": None}

PAGE_SIZE = 100

DHCP_MODE_HELP: dict[str, str] = {
    "off": "Dragonfly answers no DHCP at all; your own DHCP server must point PXE clients at "
           "Dragonfly (next-server and boot file).",
    "selective": "proxyDHCP for known machines only: Dragonfly answers PXE requests from "
                 "machines already in its inventory and allowed to boot, and ignores the rest.",
    "auto": "proxyDHCP beside your existing DHCP server: that server keeps handing out "
            "addresses, Dragonfly only adds the boot instructions for any PXE client. Safe "
            "on a shared network.",
    "full": "Dragonfly is the DHCP server (address pool, reservations, leases) of an isolated "
            "provisioning network. It refuses to start if another DHCP server answers there.",
}

MODE_HELP: dict[str, str] = {
    "native": "Dragonfly's own agent boots each machine, streams the OS image to disk and "
              "reports progress. One process, nothing else to run.",
    "simple": "Agentless: a machine that PXE-boots goes straight into its distribution's "
              "installer with a generated kickstart, preseed or autoinstall file. Slower, "
              "with no intermediate steps.",
    "tinkerbell": "Dragonfly drives Tinkerbell workflows; install also sets up k3s and the "
                  "Tinkerbell stack. For teams that already use Tinkerbell actions.",
    "distributed": "Several Dragonfly nodes share one fleet and spread boot and image "
                   "distribution between them, for large or highly available setups.",
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dragonfly.web", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    assets = static_assets()

    def static_url(name: str) -> str:
        asset = assets.get(name)
        return f"/static/{name}" + (f"?v={asset.etag}" if asset else "")

    env.globals.update(
        static_url=static_url, version=__version__, states=[s.value for s in State],
        state_help={s.value: h for s, h in STATE_HELP.items()},
        template_names={t.slug: t.name for t in catalog.TEMPLATES},
        operator_actions=OPERATOR_ACTIONS, doc_pages=DOC_PAGES,
        # Named once in Python and handed to app.js through app-data, never copied there.
        arch_names={str(code): name for code, name in ARCH_NAMES.items()},
        stream_kinds=list(STREAM_KINDS),
        # base.html's import map: each module under web/static/js/ at its versioned URL, since
        # relative imports carry no ?v= (and would be revalidated on every page).
        module_urls={f"/static/{name}": static_url(name) for name in sorted(assets)
                     if name.startswith("js/") and name.endswith(".js")})
    env.filters["tojson_attr"] = lambda v: json.dumps(v, separators=(",", ":"))
    env.filters["bytes"] = human_bytes
    env.filters["ibytes"] = binary_bytes
    env.filters["ago"] = ago
    env.filters["isotime"] = iso_time
    env.filters["eta"] = eta
    return env


def human_bytes(value: float | int | None) -> str:
    """Decimal units, as disk vendors and download counters use them."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"


def binary_bytes(value: float | int | None) -> str:
    """Binary units, as memory is sold and reported (512 GiB, not 549.8 GB)."""
    if not value:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if size == int(size) else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def ago(ts: float | None, now: float | None = None) -> str:
    """'12 s ago', '5 min ago' ... the same wording as app.js uses when it refreshes it."""
    if not ts:
        return "never"
    delta = max(0.0, (time.time() if now is None else now) - ts)
    if delta < 45:
        return "just now" if delta < 5 else f"{int(delta)} s ago"
    if delta < 3600:
        return f"{round(delta / 60)} min ago"
    if delta < 86400:
        return f"{round(delta / 3600)} h ago"
    return f"{round(delta / 86400)} d ago"


def iso_time(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def add_panel_routes(app: web.Application) -> None:
    app[PANEL_ENV] = _environment()
    app.router.add_get("/", dashboard)
    app.router.add_get("/machines", machines_page)
    app.router.add_get("/machines/{id}", machine_page)
    app.router.add_get("/tags", tags_page)
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/{page}", docs_page)
    app.router.add_get("/static/{name:.+}", static_file)
    app.router.add_get("/favicon.ico", favicon)
    app.middlewares.append(friendly_not_found)


@web.middleware
async def friendly_not_found(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown page URLs get the panel's 404 page; /api and /boot keep their JSON errors."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPNotFound:
        if request.method != "GET" or request.path.startswith(("/api/", "/boot/", "/static/")):
            raise
        return await not_found_page(request)
    return response


def current_user(request: web.Request) -> dict[str, Any] | None:
    """The caller as access control describes it (name, role, via, csrf, can), if known."""
    return request.get(USER_KEY)


PERMISSION_FLAGS = ("read", "write", "admin", "lock", "unlock", "delete", "power", "tokens")


def permissions(user: dict[str, Any] | None) -> dict[str, Any]:
    """What the pages may offer. The API enforces access; this only hides what would fail.
    Without a caller (a request access control did not see) everything is offered."""
    can = (user or {}).get("can") or {}
    actions = can.get("actions") or {}
    return {**{flag: bool(can.get(flag, True)) for flag in PERMISSION_FLAGS},
            "actions": {a: bool(actions.get(a, True)) for a in OPERATOR_ACTIONS}}


def render(request: web.Request, template: str, status: int = 200,
           **context: Any) -> web.Response:
    ctx = ctx_of(request)
    user = current_user(request)
    page_data = context.pop("page_data", {})
    if template.startswith("auth/"):  # login, setup, denied ...: app.js keys off the name
        page_data.setdefault("page", template.removeprefix("auth/").removesuffix(".html"))
    base = {"demo": ctx.demo, "mode": ctx.config["server.mode"], "path": request.path,
            "install": install_info(), "user": user, "me": user, "can": permissions(user),
            "safety": request.get(SAFETY_STATE_KEY) or SAFETY_OFF,
            "page_title": context.pop("page_title", "Dragonfly"),
            "page_data": page_data}
    # A page's own values win (the security page passes its freshly read safety state).
    html = request.app[PANEL_ENV].get_template(template).render({**base, **context})
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def install_info() -> dict[str, Any]:
    """What the demo's Install Now and Advanced Setup dialogs explain."""
    return {
        "command": "sudo ./dragonfly install",
        "modes": [{"name": m, "default": m == "native", "help": MODE_HELP.get(m, "")}
                  for m in MODES],
        "dhcp_modes": list(DHCP_MODES),
        "dhcp_help": {m: DHCP_MODE_HELP.get(m, "") for m in DHCP_MODES},
        "default_port": next(s.default for s in SETTINGS if s.key == "server.port"),
        "default_dhcp": next(s.default for s in SETTINGS if s.key == "boot.dhcp_mode"),
        "settings": [{"key": s.key, "default": s.default, "help": s.help,
                      "choices": list(s.choices)} for s in SETTINGS],
    }


def transitions_data() -> list[dict[str, Any]]:
    """The lifecycle table for the script, which derives a machine's buttons from its state.
    A list, in the table's order: the page's JSON is written with sorted keys."""
    return [{"name": t.name, "from": sorted(s.value for s in t.sources), "to": t.target.value,
             "destructive": t.destructive, "help": t.help}
            for t in TRANSITIONS.values() if t.name in OPERATOR_ACTIONS]


async def dashboard(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    fleet = ctx.fleet
    stats = fleet.stats()
    names: dict[str, str] = {}
    for wf in stats["active_workflows"]:
        try:
            names[wf["machine_id"]] = fleet.get_machine(wf["machine_id"]).name
        except NotFound:
            names[wf["machine_id"]] = wf["machine_id"]
    locks = await all_locks(ctx.store)
    boots = recent_boots(fleet, ctx.bootlog)
    edge = await boot_edge_status(ctx)
    return render(request, "dashboard.html", stats=stats, names=names, locks=locks,
                  boot_enabled=ctx.bootlog is not None, boot_edge=edge,
                  page_data={"page": "dashboard", "names": names, "locks": locks,
                             "boot_edge": edge,
                             "boot": boots, "boot_enabled": ctx.bootlog is not None,
                             "boot_rows": BOOT_ROWS, "boot_expect": BOOT_EXPECT,
                             "now": time.time()},
                  page_title="Dashboard · Dragonfly")


def recent_boots(fleet: Fleet, bootlog: BootLog | None) -> list[dict[str, Any]]:
    """GET /api/boot's rows for the dashboard, each with the machine its MAC belongs to (None:
    a MAC that boots but never registered, the case the Boot activity card is for)."""
    if bootlog is None:
        return []
    rows = []
    for row in bootlog.recent(BOOT_ROWS):
        owner = fleet.find_machine([row["mac"]])
        rows.append({**row, "machine": None if owner is None
                     else {"id": owner.id, "name": owner.name}})
    return rows


def machine_boot(machine: Machine, bootlog: BootLog | None) -> list[dict[str, Any]]:
    """GET /api/machines/{id}/boot: the boot timelines of the machine's NICs that have one."""
    if bootlog is None:
        return []
    macs = dict.fromkeys([machine.mac, *machine.macs])
    return [t for t in (bootlog.timeline(mac) for mac in macs) if t["steps"]]


def _choice(value: str, allowed: list[str] | tuple[str, ...], default: str) -> str:
    """A query value if it is one we know; a shared URL with a typo still renders a page."""
    return value if value in allowed else default


async def machines_page(request: web.Request) -> web.Response:
    fleet = ctx_of(request).fleet
    q = request.query
    query = {"q": q.get("q", "")[:200],
             "state": _choice(q.get("state", ""), [s.value for s in State], ""),
             "tag": q.get("tag", "")[:64],
             "sort": _choice(q.get("sort", "name"), list(SORT_KEYS), "name"),
             "order": _choice(q.get("order", "asc"), ("asc", "desc"), "asc")}
    page = fleet.list_machines(q=query["q"], state=query["state"], tag=query["tag"],
                               sort=query["sort"], order=query["order"], limit=PAGE_SIZE)
    locks = await all_locks(ctx_of(request).store)
    rows = [{**summary(m), "lock": locks.get(m.id)} for m in page.items]  # as the API's rows
    return render(request, "machines.html", machines=rows,
                  total=page.total, state_counts=page.states, tags=fleet.tag_counts(),
                  query=query, page_size=PAGE_SIZE,
                  page_data={"page": "machines", "query": query, "total": page.total,
                             "page_size": PAGE_SIZE, "locks": locks},
                  page_title="Machines · Dragonfly")


async def machine_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    fleet = ctx.fleet
    try:
        machine = fleet.get_machine(request.match_info["id"])
    except NotFound:
        return render(request, "not_found.html", status=404,
                      what=f"machine {request.match_info['id']}", page_title="Not found")
    workflows = [w.to_dict() for w in await fleet.list_workflows(machine.id, limit=20)]
    current = next((w for w in workflows if w["id"] == machine.workflow_id), None)
    history = [h.to_dict() for h in await fleet.history(machine.id, limit=100)]
    data = machine.to_dict()
    actions = [a for a in allowed_transitions(machine.state) if a in OPERATOR_ACTIONS]
    lock = await lock_of(ctx.store, machine.id)
    boot_macs = list(dict.fromkeys([machine.mac, *machine.macs]))
    poll, commands = agent_settings(ctx)
    agent = agent_status(machine, commands, fleet.clock(), poll)
    return render(request, "machine.html", machine=data, actions=actions,
                  workflow=current, workflows=[w for w in workflows if w is not current],
                  history=history, templates=[t.to_dict() for t in catalog.TEMPLATES],
                  type_to_confirm=TYPE_TO_CONFIRM, lock=lock, destructive=DESTRUCTIVE_ACTIONS,
                  boot_enabled=ctx.bootlog is not None, boot_macs=boot_macs,
                  agent=agent, agent_commands=AGENT_COMMANDS, no_agent_states=NO_AGENT_STATES,
                  page_data={"page": "machine", "machine": summary(machine),
                             "agent": agent, "no_agent_states": list(NO_AGENT_STATES),
                             "agent_commands": {c: {"label": label, "help": help_}
                                                for c, label, _, help_ in AGENT_COMMANDS},
                             "transitions": transitions_data(),
                             "type_to_confirm": list(TYPE_TO_CONFIRM),
                             "workflow": current, "lock": lock,
                             "boot": machine_boot(machine, ctx.bootlog),
                             "boot_enabled": ctx.bootlog is not None, "boot_macs": boot_macs,
                             "boot_expect": BOOT_EXPECT, "now": time.time()},
                  page_title=f"{machine.name} · Dragonfly")


async def tags_page(request: web.Request) -> web.Response:
    return render(request, "tags.html", tags=ctx_of(request).fleet.tag_counts(),
                  page_data={"page": "tags"}, page_title="Tags · Dragonfly")


@cache
def cli_reference() -> dict[str, Any]:
    """The command line as the parser defines it: the docs page is generated, never typed."""
    from dragonfly.cli import build_parser

    parser = build_parser()
    return {"options": _cli_options(parser), "commands": _cli_commands(parser, "dragonfly")}


def cli_commands() -> frozenset[str]:
    """The subcommands this build accepts, so the docs mark the others 'coming'."""
    return frozenset(c["name"].split()[-1] for c in cli_reference()["commands"])


def _cli_options(parser: argparse.ArgumentParser) -> list[dict[str, str]]:
    options = []
    for action in parser._actions:  # argparse has no public view of its arguments
        if (isinstance(action, (argparse._SubParsersAction, argparse._HelpAction))
                or action.help == argparse.SUPPRESS):
            continue
        if action.nargs == 0:
            value = ""
        elif action.choices:
            value = "{" + "|".join(str(c) for c in action.choices) + "}"
        else:
            long = max(action.option_strings, key=len) if action.option_strings else action.dest
            value = str(action.metavar or long.lstrip("-").replace("-", "_")).upper()
        help_text = action.help or ""
        if "%(" in help_text:
            try:
                help_text = help_text % {"default": action.default, "prog": parser.prog}
            except (KeyError, ValueError, TypeError):
                pass
        if not action.option_strings:  # a positional: its name, with any choices in words
            if action.choices:
                help_text += (" " if help_text else "") + "One of: " + ", ".join(
                    str(c) for c in action.choices) + "."
            value = str(action.metavar or action.dest).upper()
            options.append({"flags": value, "value": "", "help": help_text})
            continue
        options.append({"flags": ", ".join(action.option_strings), "value": value,
                        "help": help_text})
    return options


def _cli_commands(parser: argparse.ArgumentParser, prefix: str) -> list[dict[str, Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [{"name": f"{prefix} {name}",
                     "help": helps.get(name) or sub.description or "",
                     "options": _cli_options(sub),
                     "commands": _cli_commands(sub, f"{prefix} {name}")}
                    for name, sub in action.choices.items()]
    return []


def features(request: web.Request) -> dict[str, bool]:
    """Which parts of the product this build has, for docs that stay true as they land."""
    routes = ctx_of(request).router.routes
    return {
        "install": "install" in cli_commands(),
        "accounts": any(r.path.startswith("/api/auth/") for r in routes),
        "boot": any(res.canonical.startswith("/boot/")
                    for res in request.app.router.resources()),
    }


async def docs_page(request: web.Request) -> web.Response:
    page = request.match_info.get("page", "index")
    if page not in DOC_PAGES:
        return render(request, "not_found.html", status=404, what=f"docs page {page}",
                      page_title="Not found")
    return render(request, f"docs/{page}.html", doc_page=page,
                  settings=SETTINGS, transitions=list(TRANSITIONS.values()),
                  routes=ctx_of(request).router.routes, cli=cli_reference(),
                  cli_commands=cli_commands(),
                  has=features(request), page_data={"page": "docs"},
                  page_title=f"{DOC_PAGES[page]} · Docs · Dragonfly")


async def not_found_page(request: web.Request) -> web.Response:
    """The 404 page for any unknown page URL (see ``friendly_not_found``)."""
    return render(request, "not_found.html", status=404, what=request.path,
                  page_title="Not found")


async def static_file(request: web.Request) -> web.Response:
    asset = static_assets().get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound(text="no such asset")
    etag = f'"{asset.etag}"'
    cache = ("public, max-age=31536000, immutable" if request.query.get("v") == asset.etag
             else "no-cache")
    if etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers={"ETag": etag, "Cache-Control": cache})
    return web.Response(body=asset.body, headers={
        "Content-Type": asset.content_type, "ETag": etag, "Cache-Control": cache,
        "X-Content-Type-Options": "nosniff"})


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


async def favicon(request: web.Request) -> web.Response:
    raise web.HTTPFound("/static/icons/dragonfly.svg")
