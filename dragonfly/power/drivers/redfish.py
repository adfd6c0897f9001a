"""Redfish over HTTPS with aiohttp.

Authentication: a session (POST to the SessionService's Sessions, then ``X-Auth-Token``),
reused until the BMC forgets it (a 401 logs in again once) and deleted on close; HTTP Basic
when the BMC has no SessionService (sushy-emulator, some small BMCs). TLS is verified by
default, against the system's CAs or the record's own CA bundle; ``insecure`` switches it off
explicitly.

Quirks handled: ResetType is checked against ``ResetType@Redfish.AllowableValues`` (or the
action's ActionInfo; common values when neither is given); PowerCycle without the BMC's own
becomes off then on; the boot override PATCH carries ``If-Match`` (the ETag when the resource
has one, else ``*``), always sends BootSourceOverrideEnabled, and is retried without
BootSourceOverrideMode when the BMC rejects it; a 400/409 because the system already is in
the asked state counts as done. Power draw comes from ``Chassis/*/EnvironmentMetrics``
(PowerWatts.Reading) or the older ``Chassis/*/Power`` (PowerControl[].PowerConsumedWatts).

Monitoring reads the system once per poll (state and health from the same document) and the
draw from the resource found the first time (found again when it moves): two requests a poll.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import aiohttp
from multidict import CIMultiDict

from dragonfly.power.drivers.base import (
    BOOT_DISK,
    BOOT_PXE,
    CYCLE,
    HEALTH,
    OFF,
    ON,
    RESET,
    SOFT_OFF,
    STATE,
    WATTS,
    DriverEnv,
    PowerDriver,
    PowerError,
    Status,
    Unsupported,
    http_failure,
)

ROOT = "/redfish/v1/"
# What each action may be sent as, in order of preference.
RESET_TYPES = {ON: ("On", "ForceOn"), OFF: ("ForceOff",), SOFT_OFF: ("GracefulShutdown",),
               RESET: ("ForceRestart", "GracefulRestart"), CYCLE: ("PowerCycle",)}
DEFAULT_ALLOWED = ("On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart")
TARGET_STATE = {ON: "On", OFF: "Off", SOFT_OFF: "Off"}
BOOT_TARGETS = {"pxe": "Pxe", "disk": "Hdd"}


class RedfishDriver(PowerDriver):
    name = "redfish"
    supports = frozenset({ON, OFF, SOFT_OFF, RESET, CYCLE, BOOT_PXE, BOOT_DISK, STATE, HEALTH,
                          WATTS})

    def __init__(self, address: str, user: str, password: str, env: DriverEnv, *,
                 port: int = 0, system: str = "", ca_pem: str = "",
                 insecure: bool = False) -> None:
        super().__init__(address)
        base = address if address.startswith(("http://", "https://")) else f"https://{address}"
        base = base.rstrip("/")
        if port and base.count(":") < 2:
            base = f"{base}:{port}"
        self.base = base
        self.user = user
        self._password = password
        self.env = env
        self.system_path = system
        self._ssl: ssl.SSLContext | bool
        if insecure:
            self._ssl = False
        elif ca_pem:
            self._ssl = ssl.create_default_context(cadata=ca_pem)
        else:
            self._ssl = True
        self._token = ""
        self._session_uri = ""
        self._basic = False
        self._login_lock = asyncio.Lock()
        self.cycle_pause = 2.0
        self._watts_at = ""  # where the draw was found (EnvironmentMetrics or Power)
        env.on_close(self.close)

    # --- HTTP ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    async def _login(self) -> None:
        async with self._login_lock:
            if self._token or self._basic:
                return
            root = await self._raw("GET", ROOT, auth=False)
            sessions = ""
            if root.status == 200:
                body = await _json(root)
                sessions = (body.get("Links", {}).get("Sessions", {}).get("@odata.id", "")
                            if isinstance(body.get("Links"), dict) else "")
                if not sessions and isinstance(body.get("SessionService"), dict):
                    sessions = "/redfish/v1/SessionService/Sessions"
            if not sessions:
                self._basic = True
                return
            response = await self._raw("POST", sessions, auth=False,
                                       json={"UserName": self.user, "Password": self._password})
            if response.status in (401, 403):
                raise self._credentials()
            if response.status in (404, 405, 501):
                self._basic = True
                return
            token = response.headers.get("X-Auth-Token", "")
            if response.status >= 400 or not token:
                raise PowerError(f"the BMC at {self.base} did not open a session "
                                 f"(HTTP {response.status})", "refused")
            self._token = token
            self._session_uri = response.headers.get("Location", "")

    def _credentials(self) -> PowerError:
        return PowerError(f"the BMC at {self.base} refused the credentials", "credentials")

    async def _raw(self, method: str, path: str, *, auth: bool = True,
                   json: Any = None, headers: dict[str, str] | None = None
                   ) -> _Response:
        hdrs = {"Accept": "application/json", "OData-Version": "4.0", **(headers or {})}
        if auth:
            if self._token:
                hdrs["X-Auth-Token"] = self._token
            else:
                hdrs["Authorization"] = basic_auth(self.user, self._password)
        try:
            async with self.env.http().request(method, self._url(path), json=json,
                                               headers=hdrs, ssl=self._ssl,
                                               allow_redirects=False) as response:
                body = await response.read()
                return _Response(response.status, CIMultiDict(response.headers), body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise http_failure(exc, f"the BMC at {self.base}", self.env.timeout) from None

    async def _request(self, method: str, path: str, *, json: Any = None,
                       headers: dict[str, str] | None = None) -> _Response:
        await self._login()
        response = await self._raw(method, path, json=json, headers=headers)
        if response.status == 401 and self._token:
            self._token = ""  # the BMC forgot the session: log in again, once
            await self._login()
            response = await self._raw(method, path, json=json, headers=headers)
        if response.status in (401, 403):
            raise self._credentials()
        return response

    async def _get(self, path: str) -> tuple[dict[str, Any], str]:
        response = await self._request("GET", path)
        if response.status != 200:
            raise PowerError(f"the BMC at {self.base} answered GET {path} with HTTP "
                             f"{response.status}{response.message()}", "protocol")
        body = await _json(response)
        etag = response.headers.get("ETag", "") or str(body.get("@odata.etag", ""))
        return body, etag

    async def close(self) -> None:
        self.env.forget_close(self.close)
        token, uri = self._token, self._session_uri
        self._token = self._session_uri = ""
        if token and uri:
            try:
                await self._raw("DELETE", uri, headers={"X-Auth-Token": token}, auth=False)
            except PowerError:
                pass

    # --- the system -----------------------------------------------------------------------

    async def _system(self) -> tuple[dict[str, Any], str]:
        if not self.system_path:
            body, _ = await self._get("/redfish/v1/Systems")
            members = [m.get("@odata.id", "") for m in body.get("Members", [])
                       if isinstance(m, dict)]
            if len(members) != 1:
                raise PowerError(f"the BMC at {self.base} manages {len(members)} systems: set "
                                 f"the system path (one of {', '.join(members)})", "config")
            self.system_path = members[0]
        return await self._get(self.system_path)

    async def power_state(self) -> str:
        system, _ = await self._system()
        return _state(system)

    async def read_status(self) -> Status:
        system, _ = await self._system()
        return Status(_state(system), _health(system), await self._watts(system))

    async def _allowed(self, system: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        action = system.get("Actions", {}).get("#ComputerSystem.Reset", {})
        target = action.get("target") or f"{self.system_path}/Actions/ComputerSystem.Reset"
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if not allowed and action.get("@Redfish.ActionInfo"):
            try:
                info, _ = await self._get(action["@Redfish.ActionInfo"])
                for param in info.get("Parameters", []):
                    if param.get("Name") == "ResetType":
                        allowed = param.get("AllowableValues")
            except PowerError:
                allowed = None
        return target, tuple(allowed) if allowed else DEFAULT_ALLOWED

    async def _reset(self, op: str) -> None:
        system, _ = await self._system()
        target, allowed = await self._allowed(system)
        choice = next((t for t in RESET_TYPES[op] if t in allowed), None)
        if choice is None:
            if op == CYCLE:
                await super().power_cycle()
                return
            raise Unsupported(f"the BMC at {self.base} offers no reset type for "
                              f"{op.replace('_', ' ')} (it allows {', '.join(allowed)})")
        response = await self._request("POST", target, json={"ResetType": choice})
        if response.status in (200, 202, 204):
            return
        if response.status in (400, 409) and op in TARGET_STATE:
            # Many BMCs refuse On when on and Off when off: already there counts as done.
            now, _ = await self._get(self.system_path)
            if now.get("PowerState") == TARGET_STATE[op]:
                return
        raise PowerError(f"the BMC at {self.base} refused {choice} (HTTP {response.status}"
                         f"{response.message()})", "refused")

    async def power_on(self) -> None:
        await self._reset(ON)

    async def power_off(self) -> None:
        await self._reset(OFF)

    async def soft_off(self) -> None:
        await self._reset(SOFT_OFF)

    async def reset(self) -> None:
        await self._reset(RESET)

    async def power_cycle(self) -> None:
        await self._reset(CYCLE)

    async def set_boot_device(self, device: str, once: bool = True) -> None:
        target = BOOT_TARGETS.get(device)
        if target is None:
            raise PowerError(f"unknown boot device {device!r} (pxe or disk)", "config")
        system, etag = await self._system()
        boot: dict[str, Any] = {"BootSourceOverrideTarget": target,
                                "BootSourceOverrideEnabled": "Once" if once else "Continuous"}
        mode = system.get("Boot", {}).get("BootSourceOverrideMode")
        if mode:
            boot["BootSourceOverrideMode"] = mode
        for _attempt in range(3):
            response = await self._request("PATCH", self.system_path, json={"Boot": boot},
                                           headers={"If-Match": etag or "*"})
            if response.status in (200, 202, 204):
                return
            if response.status == 412:  # changed since read: read the new ETag, try again
                _, etag = await self._get(self.system_path)
                continue
            if response.status == 400 and "BootSourceOverrideMode" in boot:
                del boot["BootSourceOverrideMode"]
                continue
            break
        raise PowerError(f"the BMC at {self.base} refused the boot override to {target} "
                         f"(HTTP {response.status}{response.message()})", "refused")

    async def health(self) -> str:
        system, _ = await self._system()
        return _health(system)

    async def watts(self) -> float | None:
        system, _ = await self._system()
        return await self._watts(system)

    async def _watts(self, system: dict[str, Any]) -> float | None:
        if self._watts_at:
            try:
                reading = _reading(*await self._get(self._watts_at))
            except PowerError as exc:
                if exc.reason != "protocol":
                    raise
                reading = None  # gone (a firmware update moved it): look again
            if reading is not None:
                return reading
            self._watts_at = ""
        links = system.get("Links", {}).get("Chassis", [])
        chassis = [c.get("@odata.id", "") for c in links if isinstance(c, dict)]
        if not chassis:
            body, _ = await self._get("/redfish/v1/Chassis")
            chassis = [m.get("@odata.id", "") for m in body.get("Members", [])
                       if isinstance(m, dict)]
        for path in filter(None, chassis):
            doc, _ = await self._get(path)
            for kind in ("EnvironmentMetrics", "Power"):
                where = doc.get(kind, {}).get("@odata.id")
                if not where:
                    continue
                reading = _reading(*await self._get(where))
                if reading is not None:
                    self._watts_at = where
                    return reading
        return None


def _state(system: dict[str, Any]) -> str:
    state = str(system.get("PowerState", ""))
    return {"On": "on", "PoweringOff": "on", "Off": "off", "PoweringOn": "off",
            "Paused": "on"}.get(state, "unknown")


def _health(system: dict[str, Any]) -> str:
    status = system.get("Status", {})
    health = status.get("HealthRollup") or status.get("HealthRollUp") or status.get("Health")
    return {"OK": "ok", "Warning": "warning", "Critical": "critical"}.get(str(health),
                                                                          "unknown")


def _reading(doc: dict[str, Any], _etag: str = "") -> float | None:
    """The draw in an EnvironmentMetrics (PowerWatts.Reading) or an older Power resource
    (the first PowerControl[].PowerConsumedWatts)."""
    reading = doc.get("PowerWatts", {}).get("Reading")
    if isinstance(reading, int | float):
        return float(reading)
    for control in doc.get("PowerControl", []):
        consumed = control.get("PowerConsumedWatts") if isinstance(control, dict) else None
        if isinstance(consumed, int | float):
            return float(consumed)
    return None


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _Response:
    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def message(self) -> str:
        """The Redfish error's first message, as ": text" (or "")."""
        import json

        try:
            error = json.loads(self.body).get("error", {})
        except (ValueError, AttributeError):
            return ""
        if not isinstance(error, dict):
            return ""
        extended = error.get("@Message.ExtendedInfo") or []
        text = (extended[0].get("Message") if extended and isinstance(extended[0], dict)
                else error.get("message"))
        return f": {str(text)[:200]}" if text else ""


async def _json(response: _Response) -> dict[str, Any]:
    import json

    try:
        body = json.loads(response.body)
    except ValueError:
        raise PowerError("the BMC answered with something that is not JSON",
                         "protocol") from None
    return body if isinstance(body, dict) else {}
