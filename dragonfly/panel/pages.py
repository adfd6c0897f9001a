"""The panel's pages: dashboard, machines, one machine, tags, docs, and the static assets
they load. Each renders its first screenful on the server and hands its script the data it
needs as JSON (``page_data``)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from functools import cache
from typing import Any

from aiohttp import web

from dragonfly.agent.checkin import agent_status
from dragonfly.auth.guard import all_locks, lock_of
from dragonfly.boot.log import EXPECTATIONS
from dragonfly.commands import build_parser
from dragonfly.config import SETTINGS
from dragonfly.context import AppContext, ctx_of
from dragonfly.domain import catalog
from dragonfly.domain.fleet import SORT_KEYS, summary
from dragonfly.domain.model import (
    DESTRUCTIVE_ACTIONS,
    LOCALBOOT_IN,
    OPERATOR_ACTIONS,
    TRANSITIONS,
    State,
    allowed_transitions,
)
from dragonfly.edge.routes import boot_edge_status, machine_timelines, recent_boots
from dragonfly.errors import NotFound
from dragonfly.panel.render import DOC_PAGES, render
from dragonfly.resources import static_assets
from dragonfly.simple.names import ANSWER_FILES, KINDS

# Actions whose confirmation asks the operator to type the machine's name (they wipe a disk
# that holds an installed OS).
TYPE_TO_CONFIRM = ("reimage", "release")
# Actions that safety mode and node locks refuse (the API answers 423): their buttons are
# shown disabled, with the reason, while either is on.
GUARDED_ACTIONS = tuple(a for a in OPERATOR_ACTIONS if a in DESTRUCTIVE_ACTIONS)
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
PAGE_SIZE = 100
# The machine list's power filter: a power state read from the BMC, or no BMC record at all.
POWER_FILTERS = ("on", "off", "unknown", "none")

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
    boots = recent_boots(ctx.bootlog, fleet, BOOT_ROWS) if ctx.bootlog is not None else []
    edge = await boot_edge_status(ctx)
    return render(request, "dashboard.html", stats=stats, names=names, locks=locks,
                  boot_enabled=ctx.bootlog is not None, boot_edge=edge,
                  page_data={"page": "dashboard", "names": names, "locks": locks,
                             "boot_edge": edge,
                             "boot": boots, "boot_enabled": ctx.bootlog is not None,
                             "boot_rows": BOOT_ROWS, "boot_expect": BOOT_EXPECT,
                             "now": time.time()},
                  page_title="Dashboard · Dragonfly")

def _choice(value: str, allowed: list[str] | tuple[str, ...], default: str) -> str:
    """A query value if it is one we know; a shared URL with a typo still renders a page."""
    return value if value in allowed else default


def power_key(status: dict[str, Any] | None) -> str:
    """What the power filter matches: "on", "off", "unknown", or "none" (no BMC record)."""
    if not status or not status.get("configured"):
        return "none"
    return status["state"] if status.get("state") in ("on", "off") else "unknown"


def _list_power(status: dict[str, Any]) -> dict[str, Any]:
    """A machine's power status for the list: everything but the watts history."""
    return {k: v for k, v in status.items() if k != "watts_history"}


async def machines_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    fleet, power = ctx.fleet, ctx.power
    q = request.query
    query = {"q": q.get("q", "")[:200],
             "state": _choice(q.get("state", ""), [s.value for s in State], ""),
             "tag": q.get("tag", "")[:64],
             "power": _choice(q.get("power", ""), POWER_FILTERS, "") if power else "",
             "sort": _choice(q.get("sort", "name"), list(SORT_KEYS), "name"),
             "order": _choice(q.get("order", "asc"), ("asc", "desc"), "asc")}
    statuses: dict[str, dict[str, Any]] = {}
    if query["power"] and power is not None:
        # The API's list has no power filter: filter every match of the rest here (the page's
        # script does the same with GET /api/power), then count states and page.
        every = fleet.list_machines(q=query["q"], tag=query["tag"], sort=query["sort"],
                                    order=query["order"], limit=10_000_000)
        for m in every.items:
            statuses[m.id] = await power.status(m.id)
        matches = [m for m in every.items if power_key(statuses[m.id]) == query["power"]]
        state_counts = dict(Counter(m.state.value for m in matches))
        if query["state"]:
            matches = [m for m in matches if m.state.value == query["state"]]
        items, total = matches[:PAGE_SIZE], len(matches)
    else:
        page = fleet.list_machines(q=query["q"], state=query["state"], tag=query["tag"],
                                   sort=query["sort"], order=query["order"], limit=PAGE_SIZE)
        items, total, state_counts = page.items, page.total, page.states
        if power is not None:
            statuses = {m.id: await power.status(m.id) for m in items}
    locks = await all_locks(ctx.store)
    shown = {m.id: _list_power(statuses[m.id]) for m in items if m.id in statuses}
    rows = [{**summary(m), "lock": locks.get(m.id), "bmc_power": shown.get(m.id)}
            for m in items]  # as the API's rows, with the power column
    return render(request, "machines.html", machines=rows,
                  total=total, state_counts=state_counts, tags=fleet.tag_counts(),
                  query=query, page_size=PAGE_SIZE, power_enabled=power is not None,
                  page_data={"page": "machines", "query": query, "total": total,
                             "page_size": PAGE_SIZE, "locks": locks,
                             "power_enabled": power is not None, "power": shown},
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
    agent = agent_status(machine, ctx.commands, fleet.clock(), ctx.poll_seconds,
                         fleet.active_workflow_of(machine))
    # Power through its BMC (None: this instance has no power control): the Power card, and
    # the actions its driver supports. The BMC record itself is for admins, from the API.
    power = await ctx.power.status(machine.id) if ctx.power is not None else None
    # The OpenJBOD enclosures holding its disks, with the machines attached to each; their
    # state is asked of the controllers by the page's script (GET .../enclosures).
    enclosures = machine_enclosures(ctx, machine.id)
    return render(request, "machine.html", machine=data, actions=actions, power=power,
                  workflow=current, workflows=[w for w in workflows if w is not current],
                  history=history, templates=[t.to_dict() for t in catalog.TEMPLATES],
                  type_to_confirm=TYPE_TO_CONFIRM, lock=lock, destructive=GUARDED_ACTIONS,
                  boot_enabled=ctx.bootlog is not None, boot_macs=boot_macs,
                  agent=agent, agent_commands=AGENT_COMMANDS, no_agent_states=NO_AGENT_STATES,
                  enclosures=enclosures, answer_templates=await answer_templates(ctx),
                  page_data={"page": "machine", "machine": summary(machine),
                             "agent": agent, "no_agent_states": list(NO_AGENT_STATES),
                             "agent_commands": {c: {"label": label, "help": help_}
                                                for c, label, _, help_ in AGENT_COMMANDS},
                             "transitions": transitions_data(),
                             "type_to_confirm": list(TYPE_TO_CONFIRM),
                             "workflow": current, "lock": lock, "power": power,
                             "enclosures": enclosures,
                             "boot": ([] if ctx.bootlog is None
                                      else machine_timelines(ctx.bootlog, machine)),
                             "boot_enabled": ctx.bootlog is not None, "boot_macs": boot_macs,
                             "boot_expect": BOOT_EXPECT, "now": time.time()},
                  page_title=f"{machine.name} · Dragonfly")


async def answer_templates(ctx: AppContext) -> list[dict[str, str]]:
    """The OS templates Simple mode has an answer file for (the machine page's preview)."""
    if ctx.templates is None:
        return []
    return [{"slug": t.slug, "name": t.name, "kind": KINDS[t.family]}
            for t in await ctx.templates.list() if t.family in ANSWER_FILES]


def machine_names(ctx: AppContext, ids: list[str]) -> dict[str, str]:
    """Each machine's name (its id when it is gone from the inventory)."""
    names = {}
    for machine_id in ids:
        try:
            names[machine_id] = ctx.fleet.get_machine(machine_id).name
        except NotFound:
            names[machine_id] = machine_id
    return names


def machine_enclosures(ctx: AppContext, machine: str) -> list[dict[str, Any]]:
    """The enclosures ``machine`` is attached to: [{name, machines: [{id, name}]}], without
    asking their controllers anything."""
    if ctx.power is None:
        return []
    enclosures = ctx.power.enclosures
    out = []
    for name in enclosures.of_machine(machine):
        attached = enclosures.machines(name)
        names = machine_names(ctx, attached)
        out.append({"name": name, "machines": [{"id": m, "name": names[m]} for m in attached]})
    return out


async def tags_page(request: web.Request) -> web.Response:
    return render(request, "tags.html", tags=ctx_of(request).fleet.tag_counts(),
                  page_data={"page": "tags"}, page_title="Tags · Dragonfly")


async def templates_page(request: web.Request) -> web.Response:
    return render(request, "templates.html", page_data={"page": "templates"},
                  page_title="Templates · Dragonfly")


@cache
def cli_reference() -> dict[str, Any]:
    """The command line as the parser defines it: the docs page is generated, never typed."""
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
