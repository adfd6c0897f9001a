"""The settings table drives TOML, environment and docs; bad values get clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dragonfly.config import SETTINGS, Config, render_toml, settings_markdown
from dragonfly.errors import InvalidInput


def test_every_setting_is_documented() -> None:
    for setting in SETTINGS:
        assert len(setting.help) > 20, setting.key
        assert setting.coerce(setting.default, "test") == setting.default
    table = settings_markdown()
    for setting in SETTINGS:
        assert f"`{setting.key}`" in table and setting.env in table


def test_rendered_file_lists_every_setting_and_loads_back(tmp_path: Path) -> None:
    text = render_toml()
    doc = tomllib.loads(text)
    for setting in SETTINGS:
        assert doc[setting.section][setting.name] == setting.default
        assert f"# {setting.help}" in text
    path = tmp_path / "d.toml"
    path.write_text(render_toml({"server.port": 8080, "security.allowlist": ["10.0.0.0/8"]}))
    config = Config.load(path, env={})
    assert config["server.port"] == 8080
    assert config["security.allowlist"] == ["10.0.0.0/8"]


def test_precedence_file_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[server]\nport = 4000\nmode = "simple"\n')
    config = Config.load(path, env={"DRAGONFLY_SERVER_PORT": "5000"},
                         overrides={"server.port": 6000, "boot.dhcp_mode": None})
    assert config["server.port"] == 6000
    assert config["server.mode"] == "simple"
    assert config["boot.dhcp_mode"] == "auto"
    assert Config.load(path, env={"DRAGONFLY_SERVER_PORT": "5000"})["server.port"] == 5000


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nport = 'x'\n", "server.port"),
    ("[server]\nport = 70000\n", "not a TCP port"),
    ("[server]\nmode = 'fast'\n", "not one of"),
    ("[server]\nnope = 1\n", "unknown setting server.nope"),
    ("[security]\nallowlist = ['10.0.0.0/33']\n", "not a CIDR"),
    ("server = 1\n", "must be a table"),
    ("[server\n", "not valid TOML"),
])
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message):
        Config.load(path, env={})


def test_bad_environment_value() -> None:
    with pytest.raises(InvalidInput, match="DRAGONFLY_BOOT_DHCP_MODE"):
        Config.load(None, env={"DRAGONFLY_BOOT_DHCP_MODE": "sometimes"})
