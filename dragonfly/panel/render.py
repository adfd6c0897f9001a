"""Rendering the panel's pages: the jinja2 environment over ``web/templates``, the values
every page gets (caller, permissions, safety banner, install help), and ``render`` itself."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dragonfly import __version__
from dragonfly.auth.policy import SAFETY_STATE_KEY, USER_KEY
from dragonfly.boot.registry import ARCH_NAMES
from dragonfly.config import DHCP_MODES, MODES, SETTINGS
from dragonfly.context import ctx_of
from dragonfly.domain import catalog
from dragonfly.domain.events import STREAM_KINDS
from dragonfly.domain.model import OPERATOR_ACTIONS, STATE_HELP, State
from dragonfly.format import ago, binary_bytes, decimal_bytes, eta, iso_time
from dragonfly.resources import static_assets

if TYPE_CHECKING:
    import jinja2

DOC_PAGES: dict[str, str] = {
    "index": "Getting started",
    "install": "Installing",
    "lifecycle": "Machine lifecycle",
    "settings": "Settings",
    "api": "API",
    "cli": "Command line",
}
# The sprite icon of each operator action (``OPERATOR_ACTIONS`` in the lifecycle table).
# Tests check that every action has one and that every icon exists.
ACTION_ICONS: dict[str, str] = {
    "adopt": "check-circle",
    "deploy": "download",
    "reimage": "refresh",
    "release": "undo",
    "maintenance": "pause-circle",
    "resume": "play-circle",
}

# Power actions through the BMC, in the API's order: (button label, sprite icon, tooltip,
# whether it interrupts a running machine: those are confirmed in a dialog first). Handed to
# the scripts through app-data (static/js/power.js), never copied there.
POWER_OPS: dict[str, tuple[str, str, str, bool]] = {
    "on": ("Power on", "power", "Switches the machine on.", False),
    "off": ("Power off", "power", "Cuts the power at once (hard off): the operating system "
            "gets no chance to shut down.", True),
    "soft_off": ("Shut down", "power", "Asks the operating system to shut down (ACPI); the "
                 "machine stays off.", True),
    "reset": ("Reset", "refresh", "Restarts the machine at once (hard reset), without "
              "shutting the operating system down.", True),
    "cycle": ("Power cycle", "refresh", "Switches the machine off and on again, without "
              "shutting the operating system down.", True),
    "boot_pxe": ("Network boot next", "network", "Makes the next boot, once, a network (PXE) "
                 "boot: back into Dragonfly.", False),
    "boot_disk": ("Disk boot next", "disk", "Makes the next boot, once, from the local disk.",
                  False),
}

SAFETY_OFF: dict[str, Any] = {"enabled": False, "reason": "", "by": "", "since": None}
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

@functools.cache
def environment() -> jinja2.Environment:
    """The panel's one jinja2 environment, made at the first page rendered: importing jinja2
    and reading web/static (for the versioned asset URLs) is not work for the start."""
    import jinja2

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
        operator_actions=ACTION_ICONS, power_ops=POWER_OPS, doc_pages=DOC_PAGES,
        # Named once in Python and handed to app.js through app-data, never copied there.
        arch_names={str(code): name for code, name in ARCH_NAMES.items()},
        stream_kinds=list(STREAM_KINDS),
        # base.html's import map: each module under web/static/js/ at its versioned URL, since
        # relative imports carry no ?v= (and would be revalidated on every page).
        module_urls={f"/static/{name}": static_url(name) for name in sorted(assets)
                     if name.startswith("js/") and name.endswith(".js")})
    env.filters["tojson_attr"] = lambda v: json.dumps(v, separators=(",", ":"))
    env.filters["bytes"] = decimal_bytes
    env.filters["ibytes"] = binary_bytes
    env.filters["ago"] = ago
    env.filters["isotime"] = iso_time
    env.filters["eta"] = eta
    return env

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
    html = environment().get_template(template).render({**base, **context})
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
