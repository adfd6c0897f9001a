"""Settings changed from the panel (or the recovery CLI), stored over the config file.

The config file and environment give every setting its value at start; the security page and
the first-run wizard store their changes as documents of kind ``setting`` (one per key), which
take precedence while they exist. ``dragonfly security reset`` deletes them, so the config file
applies again: the way back from a lock-out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dragonfly.auth.allowlist import Network, parse_networks
from dragonfly.config import SETTINGS_BY_KEY, Config
from dragonfly.errors import InvalidInput
from dragonfly.store import Delete, Put, Store

SETTING = "setting"
# Changed on the Security page and through /api/settings/security: the security.* keys and the
# boot networks (who may boot is access control too, though it governs other routes).
SECURITY_KEYS: tuple[str, ...] = tuple(
    [k for k in SETTINGS_BY_KEY if k.startswith("security.")] + ["boot.allowed_networks"])
# What the panel may change at run time. The other boot keys come from the first-run wizard.
RUNTIME_KEYS: tuple[str, ...] = SECURITY_KEYS + (
    "server.mode", "boot.interface", "boot.dhcp_mode", "boot.default_os")


@dataclass(frozen=True)
class Security:
    """The security settings in force for one request."""

    front_page: str
    allowlist: list[Network]
    allowlist_text: list[str]
    require_mfa: bool
    session_idle: float  # seconds
    session_max: float
    max_failures: int
    max_failures_address: int
    lockout: float
    token_default_days: int
    trusted_proxies: list[Network]
    boot_networks: list[Network]  # empty: machines may boot from anywhere


class RuntimeSettings:
    def __init__(self, store: Store, config: Config, clock: Callable[[], float]) -> None:
        self.store = store
        self.config = config
        self.clock = clock

    async def overrides(self) -> dict[str, Any]:
        return {d.key: d.data["value"] for d in await self.store.list(SETTING)
                if d.key in SETTINGS_BY_KEY and "value" in d.data}

    async def values(self) -> dict[str, Any]:
        return {**self.config.as_dict(), **await self.overrides()}

    async def get(self, key: str) -> Any:
        doc = await self.store.get(SETTING, key)
        if doc is not None and "value" in doc.data:
            return doc.data["value"]
        return self.config[key]

    async def security(self) -> Security:
        v = await self.values()
        return Security(
            front_page=v["security.front_page"],
            allowlist=parse_networks(v["security.allowlist"]),
            allowlist_text=list(v["security.allowlist"]),
            require_mfa=bool(v["security.require_mfa"]),
            session_idle=v["security.session_idle_minutes"] * 60.0,
            session_max=v["security.session_max_hours"] * 3600.0,
            max_failures=v["security.login_max_failures"],
            max_failures_address=v["security.login_max_failures_per_address"],
            lockout=v["security.login_lockout_minutes"] * 60.0,
            token_default_days=v["security.token_default_days"],
            trusted_proxies=parse_networks(v["security.trusted_proxies"]),
            boot_networks=parse_networks(v["boot.allowed_networks"]))

    async def validate(self, changes: dict[str, Any]) -> dict[str, Any]:
        """``changes`` coerced to each setting's type, checked together with the rest."""
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in RUNTIME_KEYS:
                raise InvalidInput(f"{key} cannot be changed here",
                                   {"changeable": list(RUNTIME_KEYS)})
            clean[key] = SETTINGS_BY_KEY[key].coerce(value, "request")
        # The same whole-config validation as at start (CIDRs, ranges), on the merged values.
        merged = {**await self.values(), **clean}
        Config.load(None, env={}, overrides=merged)
        return clean

    async def set(self, changes: dict[str, Any], by: str) -> dict[str, Any]:
        clean = await self.validate(changes)
        now = self.clock()
        if clean:
            await self.store.commit([Put(SETTING, key, {"value": value, "by": by, "at": now})
                                     for key, value in clean.items()])
        return clean

    async def reset(self, keys: list[str] | None = None) -> list[str]:
        present = [d.key for d in await self.store.list(SETTING)]
        doomed = [k for k in present if keys is None or k in keys]
        if doomed:
            await self.store.commit([Delete(SETTING, k) for k in doomed])
        return doomed

    async def describe(self) -> list[dict[str, Any]]:
        """Every runtime setting with its value, where it comes from and its help."""
        overrides = await self.overrides()
        out = []
        for key in RUNTIME_KEYS:
            setting = SETTINGS_BY_KEY[key]
            out.append({"key": key,
                        "value": setting.shown(overrides.get(key, self.config[key])),
                        "source": "panel" if key in overrides else "config",
                        "default": setting.shown(setting.default), "help": setting.help,
                        "type": setting.type.__name__, "choices": list(setting.choices)})
        return out
