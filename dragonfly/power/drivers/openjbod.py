"""OpenJBOD: an enclosure's RP2040 controller switching its ATX power supply over HTTP.

Its firmware ("tank", github.com/OpenJBOD/tank) answers ``GET /api/power`` (documented as
``{"powered_on": bool}``; the handler sends ``{"status": "power_status", "state": "on"}``:
both are read), ``/api/power/on`` and ``/api/power/off`` (GET or POST; we POST) and
``GET /api/status`` (temperatures, fan with ``fan_fault``). Authentication: HTTP Basic in the
releases that document the API; newer firmware dropped Basic for bearer API tokens, so a
record with a password and no user sends the password as ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from dragonfly.power.drivers.base import (
    CYCLE,
    HEALTH,
    OFF,
    ON,
    STATE,
    DriverEnv,
    PowerDriver,
    PowerError,
    http_failure,
)
from dragonfly.power.drivers.redfish import basic_auth


class OpenJbodDriver(PowerDriver):
    name = "openjbod"
    supports = frozenset({ON, OFF, CYCLE, STATE, HEALTH})

    def __init__(self, address: str, user: str, password: str, env: DriverEnv, *,
                 port: int = 0, ca_pem: str = "", insecure: bool = False) -> None:
        super().__init__(address)
        base = address if address.startswith(("http://", "https://")) else f"http://{address}"
        base = base.rstrip("/")
        if port and base.count(":") < 2:
            base = f"{base}:{port}"
        self.base = base
        self.user = user
        self._password = password
        self.env = env
        self._ssl: ssl.SSLContext | bool = (False if insecure else
                                            ssl.create_default_context(cadata=ca_pem)
                                            if ca_pem else True)

    async def _call(self, method: str, path: str) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self.user:
            headers["Authorization"] = basic_auth(self.user, self._password)
        elif self._password:
            headers["Authorization"] = f"Bearer {self._password}"
        try:
            async with self.env.http().request(method, self.base + path, headers=headers,
                                               ssl=self._ssl) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise http_failure(exc, f"the OpenJBOD controller at {self.base}",
                               self.env.timeout) from None
        if status in (401, 403):
            raise PowerError(f"the OpenJBOD controller at {self.base} refused the credentials",
                             "credentials")
        if status != 200:
            raise PowerError(f"the OpenJBOD controller at {self.base} answered {method} {path} "
                             f"with HTTP {status}", "refused")
        try:
            data = json.loads(body)
        except ValueError:
            raise PowerError(f"the OpenJBOD controller at {self.base} answered {path} with "
                             "something that is not JSON", "protocol") from None
        return data if isinstance(data, dict) else {}

    async def power_state(self) -> str:
        data = await self.env.gated(self.base, lambda: self._call("GET", "/api/power"))
        if isinstance(data.get("powered_on"), bool):
            return "on" if data["powered_on"] else "off"
        state = data.get("state")
        return state if state in ("on", "off") else "unknown"

    async def _switch(self, state: str) -> None:
        data = await self.env.gated(self.base, lambda: self._call("POST", f"/api/power/{state}"))
        if data.get("result") not in (None, "success"):
            raise PowerError(f"the OpenJBOD controller at {self.base} did not switch {state}: "
                             f"{str(data.get('result'))[:100]}", "refused")

    async def power_on(self) -> None:
        await self._switch("on")

    async def power_off(self) -> None:
        await self._switch("off")

    async def health(self) -> str:
        data = await self.env.gated(self.base, lambda: self._call("GET", "/api/status"))
        fan = data.get("fan", {}) if isinstance(data.get("fan"), dict) else {}
        temps = data.get("temperature", {}) if isinstance(data.get("temperature"), dict) else {}
        if fan.get("fan_fault"):
            return "critical"
        if temps and not any(temps.get(k) for k in ("ds18b20_valid", "rp2040_valid")):
            return "warning"
        return "ok"
