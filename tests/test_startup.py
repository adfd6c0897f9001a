"""What starting the demo loads: a first page needs no template engine for operators' user-data,
no Prometheus client, no TOTP or QR library, no DNS resolver, no IPMI library, no DHCP server,
image store or deployment engine. Starting them is what made the demo slow to answer
(bench/startup.py measures the time; this only guards what is imported, which does not
depend on how busy the machine is).

The demo runs for real in a subprocess (``python -m dragonfly --demo``), and reports its
``sys.modules`` once its first request has been answered, then again after the dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from dragonfly.commands import build_parser, parse_args
from tests.conftest import ROOT, free_port

# Imported by no start of the demo: each is loaded when its feature is first used.
NOT_AT_START = (
    "jinja2",  # the panel's pages and operator user-data: first page, first template check
    "prometheus_client",  # the first /metrics scrape
    "pyotp", "segno",  # TOTP enrolment and sign-in with a second factor
    "dns",  # DNS identity: the server's boot edge only
    "pyghmi",  # the IPMI power driver's first command
    "statistics",  # ETAs from a history (with fractions and decimal)
    "dragonfly.edge.dhcp.server", "dragonfly.edge.dhcp.responder",  # the server's boot edge
    "dragonfly.edge.service",
    "dragonfly.images.cache", "dragonfly.images.formats",  # the server's image store
    "dragonfly.workflow.engine",  # the server's deployment engine
    "dragonfly.templates.seed",  # a seed preview or a deployment
    "dragonfly.dnsid.service",
    # The subcommands' modules: `dragonfly --demo` names none.
    "dragonfly.auth.cli", "dragonfly.ops.install", "dragonfly.boot.discovery_image",
    "dragonfly.images.cli", "dragonfly.ops.status",
)

PROBE = textwrap.dedent("""
    import json, os, sys, threading, time, urllib.request

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=5) as response:
            return response.status

    def probe():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get("/api/version") == 200:
                    break
            except OSError:
                time.sleep(0.02)
        first = sorted(sys.modules)
        page = get("/")
        after_page = sorted(sys.modules)
        with open(OUT, "w") as out:
            json.dump({"first": first, "page": page, "after_page": after_page}, out)
        os._exit(0)

    threading.Thread(target=probe, daemon=True).start()
    sys.argv = ["dragonfly", "--demo", "--port", str(PORT)]
    from dragonfly._entry import main
    main()
""")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The demo's modules at its first answer and after its first page."""
    work = tmp_path_factory.mktemp("startup")
    out = work / "modules.json"
    script = f"PORT = {free_port()}\nOUT = {str(out)!r}\n{PROBE}"
    env = {**os.environ, "DRAGONFLY_CONFIG": str(work / "no-such-config.toml"),
           "PYTHONPATH": str(ROOT)}
    # The probe itself imports urllib.request (email, http.client): none of those is checked.
    subprocess.run([sys.executable, "-c", script], cwd=work, env=env, timeout=120, check=True,
                   capture_output=True)
    result: dict[str, object] = json.loads(out.read_text())
    return result


def _loaded(modules: object, name: str) -> bool:
    assert isinstance(modules, list)
    return name in modules


@pytest.mark.parametrize("module", NOT_AT_START)
def test_the_demo_answers_without_loading(loaded: dict[str, object], module: str) -> None:
    assert not _loaded(loaded["first"], module), f"{module} is imported before the first 200"


def test_the_probe_sees_what_the_demo_loads(loaded: dict[str, object]) -> None:
    """The same probe does see what the start needs, and the first page's template engine:
    the assertions above are about imports, not about a probe that sees nothing."""
    for module in ("aiohttp.web", "dragonfly.app", "dragonfly.demo.simulator",
                   "dragonfly.power.service"):
        assert _loaded(loaded["first"], module), module
    assert loaded["page"] == 200
    assert _loaded(loaded["after_page"], "jinja2")


# --- the command line: the demo's arguments are read without the subcommands' parser -------------

@pytest.mark.parametrize("argv", [[], ["--demo"], ["--demo", "--port", "3001"],
                                  ["--bind", "::1", "--port=3002"], ["--config", "/x.toml"],
                                  ["--dem"]])
def test_front_arguments_read_as_the_full_parser_reads_them(argv: list[str]) -> None:
    assert vars(parse_args(argv)) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(("argv", "command"), [(["serve", "--port", "3001"], "serve"),
                                               (["status"], "status"), (["version"], "version"),
                                               (["--port", "3001", "serve"], "serve")])
def test_subcommands_go_to_the_full_parser(argv: list[str], command: str) -> None:
    args = parse_args(argv)
    assert args.command == command
    assert vars(args) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [["--port"], ["--port", "x"], ["--bogus"], ["nonsense"]])
def test_bad_arguments_get_the_full_parsers_error(argv: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("usage: dragonfly [-h]")


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for command in ("serve", "status", "install", "image"):
        assert command in text

