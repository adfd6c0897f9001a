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
import time
import urllib.request
import zipfile
from pathlib import Path

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
    "cryptography",  # sealing a BMC password (the demo's are kept in memory as they are)
    "tomllib",  # reading a config file: the demo has none
    "dragonfly.simple.engine", "dragonfly.simple.importer", "tarfile",  # Simple mode's handlers
    "dragonfly.simple.render", "dragonfly.simple.spec", "dragonfly.simple.installers",
    # The subcommands' modules: `dragonfly --demo` names none.
    "dragonfly.auth.cli", "dragonfly.ops.install", "dragonfly.boot.discovery_image",
    "dragonfly.images.cli", "dragonfly.ops.status",
)

PROBE = textwrap.dedent("""
    import gc, json, os, sys, threading, time, urllib.request

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
        collecting = gc.isenabled()
        url = f"http://127.0.0.1:{PORT}/api/deployments/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            deployed = json.load(response)["total"]
        page = get("/")
        after_page = sorted(sys.modules)
        with open(OUT, "w") as out:
            json.dump({"first": first, "page": page, "after_page": after_page,
                       "gc": collecting, "frozen": gc.get_freeze_count(),
                       "deployed": deployed}, out)
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


def test_the_collector_is_back_on_once_the_demo_answers(loaded: dict[str, object]) -> None:
    """_entry turns the garbage collector off for the start; the app turns it back on, with
    what the start made frozen, before the first answer."""
    assert loaded["gc"] is True
    assert isinstance(loaded["frozen"], int) and loaded["frozen"] > 10_000


def test_the_demo_history_is_whole_from_its_first_read(loaded: dict[str, object]) -> None:
    """The made-up history is made after the start (the demo answers meanwhile): a reader
    right after the first answer waits for it and gets all of it, not an empty history."""
    assert isinstance(loaded["deployed"], int) and loaded["deployed"] >= 300


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



# --- the zipapp: what its first start unpacks -----------------------------------------------

@pytest.mark.zipapp
def test_the_zipapp_imports_dragonfly_from_one_zip(zipapp: Path, tmp_path: Path) -> None:
    """build_zipapp puts Dragonfly's modules (with their .pyc) and the panel's files into
    _start.zip, which the first start unpacks as one file, and keeps on disk only what must be
    a real file: the package's __init__, its build record and data and the iPXE loaders.
    Every kind of package data is still found (shiv's interpreter mode runs the check)."""
    root = tmp_path / "shiv"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "SHIV_ROOT": str(root), "SHIV_INTERPRETER": "1", "LANG": "C.UTF-8"}
    check = textwrap.dedent("""
        import json, platform, sys
        from importlib.resources import files
        import dragonfly.cli
        from dragonfly._entry import _build_record, interpreter_problem
        from dragonfly.boot.loaders import bundled_root
        from dragonfly.panel.render import environment
        from dragonfly.resources import static_assets
        print(json.dumps({
            "cli": dragonfly.cli.__file__,
            "build": _build_record(), "problem": interpreter_problem(),
            "assets": len(static_assets()),
            "page": environment().get_template("base.html").filename,
            "manifest": bundled_root().joinpath("manifest.toml").is_file(),
            "agent": len(files("dragonfly.agent").joinpath("agent.sh").read_bytes()),
            "service": len(files("dragonfly").joinpath("data", "dragonfly.service").read_text()),
            "answers": len(files("dragonfly.simple").joinpath("files", "ks.cfg.j2").read_text()),
            "machine": platform.machine()}))
    """)
    done = subprocess.run([str(zipapp), "-c", check], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "/_start.zip/dragonfly/" in found["cli"]
    assert found["build"]["machine"] == found["machine"] and found["problem"] is None
    assert found["assets"] > 10 and found["manifest"]
    assert found["agent"] > 0 and found["service"] > 0 and found["answers"] > 0
    assert "/site-packages/_start.zip/dragonfly/web/templates/" in found["page"]
    site = next(root.glob("*/site-packages"))
    with zipfile.ZipFile(site / "_start.zip") as archive:
        names = set(archive.namelist())
    assert {"dragonfly/cli.py", "dragonfly/cli.pyc", "dragonfly/app.pyc"} <= names
    assert {"dragonfly/web/static/app.css", "dragonfly/web/templates/base.html"} <= names
    assert sorted(p.name for p in (site / "dragonfly").iterdir()) == [
        "__init__.py", "__pycache__", "_build.json", "_dataclasses.marshal", "data", "ipxe",
        "py.typed"]
    unpacked = sum(1 for p in site.rglob("*") if p.is_file())
    assert unpacked < 400, unpacked  # ~1,190 before Dragonfly's modules went into the zip
    # Copied out of the zipapp at the first import of jinja2 (and markupsafe) above.
    assert (site / "_zipped.zip").is_file() and (site / "markupsafe").is_dir()


@pytest.mark.zipapp
def test_packages_with_real_files_are_unpacked_at_their_first_import(zipapp: Path,
                                                                      tmp_path: Path) -> None:
    """cryptography, PyYAML (with libyaml), pyghmi, msgspec and markupsafe stay in _lazy.zip
    until first imported, then are unpacked into the cache, by two starts at once too;
    _lazy.zip and _zipped.zip themselves stay in the zipapp until then. The metadata of the
    packages in the zips (in _zipped.zip) is found before any of them is imported."""
    root = tmp_path / "shiv"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "SHIV_ROOT": str(root), "SHIV_INTERPRETER": "1", "LANG": "C.UTF-8"}
    subprocess.run([str(zipapp), "-c", "import dragonfly.cli"], env=env, check=True,
                   timeout=120)
    site = next(root.glob("*/site-packages"))
    assert not (site / "_lazy.zip").exists() and not (site / "_zipped.zip").exists()
    assert not (site / "cryptography").exists() and not (site / "pyghmi").exists()
    assert not list(site.glob("cryptography-*.dist-info"))
    use = textwrap.dedent("""
        import json
        from importlib.metadata import version
        versions = {n: version(n) for n in ("cryptography", "httpx2", "dnspython", "aiohttp")}
        import _cffi_backend, markupsafe, msgspec, yaml
        from cryptography.fernet import Fernet
        from pyghmi.ipmi import command
        box = Fernet(Fernet.generate_key())
        print(json.dumps({"fernet": box.decrypt(box.encrypt(b"x")).decode(),
                          "libyaml": yaml.__with_libyaml__, "yaml": yaml.safe_load("a: 1"),
                          "msgspec": msgspec.json.decode(b"[1]"),
                          "escaped": str(markupsafe.escape("<")),
                          "from": __import__("cryptography").__file__,
                          "versions": versions, "version": __import__("cryptography").__version__}))
    """)
    runs = [subprocess.Popen([str(zipapp), "-c", use], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        found = json.loads(out.strip().splitlines()[-1])
        assert found["fernet"] == "x" and found["libyaml"] is True
        assert found["yaml"] == {"a": 1} and found["msgspec"] == [1]
        assert found["escaped"] == "&lt;"
        assert found["from"] == str(site / "cryptography" / "__init__.py")
        assert found["versions"]["cryptography"] == found["version"]
        assert all(found["versions"].values())
    assert (site / "pyghmi" / "ipmi").is_dir() and (site / "_lazy.zip").is_file()
    assert not [p for p in site.iterdir() if p.name.endswith((".unpacking", ".copying"))]


# --- dataclasses' generated code, compiled at build -------------------------------------------

def test_precompiled_dataclass_code_is_used_and_behaves(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What record() saw compiled, use() serves: a class defined again from the same source
    gets every method from the stored code (no miss), and behaves as a dataclass does."""
    import dataclasses
    import marshal

    from dragonfly import _precompiled

    body = textwrap.dedent("""
        from dataclasses import dataclass, field

        @dataclass(frozen=True)
        class Point:
            x: int
            y: int = 0
            tags: list[str] = field(default_factory=list)
    """)
    (tmp_path / "precompiled_a.py").write_text(body)
    (tmp_path / "precompiled_b.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        sources, failed = _precompiled.record(iter(["precompiled_a", "no_such_module_x"]))
        assert failed == ["no_such_module_x"]
        assert any("def __init__(self,x:_type_x" in s for s in sources), sources
        assert "exec" not in vars(dataclasses)  # recording is over
        stored = tmp_path / _precompiled.FILE
        stored.write_bytes(marshal.dumps({s: compile(s, "<string>", "exec") for s in sources}))
        assert _precompiled.use(tmp_path / "absent") is None
        hook = _precompiled.use(stored)
        assert hook is not None and len(hook.codes) == len(sources)
        import precompiled_b

        assert hook.misses == 0
        point = precompiled_b.Point(1, tags=["a"])
        assert point == precompiled_b.Point(1, 0, ["a"]) and repr(point).startswith("Point(x=1")
        with pytest.raises(dataclasses.FrozenInstanceError):
            point.x = 2  # type: ignore[misc]
    finally:
        vars(dataclasses).pop("exec", None)


@pytest.mark.zipapp
def test_the_zipapp_compiles_no_dataclass_code_at_the_demos_start(zipapp: Path,
                                                                   tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "SHIV_ROOT": str(tmp_path / "shiv"), "SHIV_INTERPRETER": "1", "LANG": "C.UTF-8",
           "DRAGONFLY_CONFIG": str(tmp_path / "none.toml")}
    check = textwrap.dedent("""
        from pathlib import Path
        import dragonfly
        from dragonfly._precompiled import FILE, use
        hook = use(Path(dragonfly.__file__).with_name(FILE))
        import dragonfly.cli, dragonfly.compose, dragonfly.app
        dragonfly.app.create_app(dragonfly.compose.demo_context())
        print(hook.misses, len(hook.codes))
    """)
    done = subprocess.run([str(zipapp), "-c", check], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    misses, codes = map(int, done.stdout.split()[-2:])
    assert misses == 0 and codes > 200


@pytest.mark.zipapp
def test_the_demos_first_start_leaves_the_later_zips_in_the_zipapp(zipapp: Path,
                                                                    tmp_path: Path) -> None:
    """The first start unpacks neither _lazy.zip nor _zipped.zip (12 MB) nor the metadata of
    their packages: the demo answers without them."""
    root = tmp_path / "shiv"
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "SHIV_ROOT": str(root), "LANG": "C.UTF-8",
           "DRAGONFLY_CONFIG": str(tmp_path / "none.toml")}
    demo = subprocess.Popen([str(zipapp), "--demo", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/api/version"):
            assert demo.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        site = next(root.glob("*/site-packages"))
        present = sorted(p.name for p in site.iterdir())
    finally:
        demo.terminate()
        demo.wait(10)
    assert "_start.zip" in present and "aiohttp" in present
    assert not {"_lazy.zip", "_zipped.zip", "cryptography", "jinja2"} & set(present)
    assert not [n for n in present if n.startswith(("jinja2-", "cryptography-"))]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
