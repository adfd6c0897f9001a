"""The boot doctor: timelines, coalescing, diagnosis, persistence, and the API."""

from __future__ import annotations

from typing import Any

import pytest

from dragonfly.app import create_app
from dragonfly.boot.log import BOOT, BootLog, diagnose
from dragonfly.compose import demo_context
from dragonfly.store import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store() -> Any:
    s = SqliteStore(":memory:")
    await s.open()
    yield s
    await s.close()


async def test_timeline_coalesces_retransmits_and_diagnoses(store: SqliteStore) -> None:
    clock = Clock()
    log = BootLog(store, clock=clock)
    mac = "52:54:00:12:34:56"
    for _ in range(3):
        log.record(mac, "dhcp_discover", {"arch": 7})
        clock.now += 1
    log.record(mac.upper(), "dhcp_offer", {"loader": "ipxe.efi", "reason": "UEFI"})
    timeline = log.timeline(mac)
    assert [s["step"] for s in timeline["steps"]] == ["dhcp_discover", "dhcp_offer"]
    assert timeline["steps"][0]["count"] == 3
    assert timeline["diagnosis"] is None
    clock.now += 60
    assert "never fetched the loader ipxe.efi" in log.timeline(mac)["diagnosis"]
    log.record(mac, "tftp", {"file": "ipxe.efi", "bytes": 1000, "ip": "10.0.0.5"})
    assert log.mac_for_ip("10.0.0.5") == mac
    assert log.record_by_ip("10.0.0.5", "ipxe_script", {"target": "discovery"})
    assert not log.record_by_ip("10.9.9.9", "ipxe_script", {})
    clock.now += 30
    assert log.timeline(mac)["diagnosis"] is None
    log.record(mac, "checkin", {"state": "discovered"})
    clock.now += 10_000
    assert log.timeline(mac)["diagnosis"] is None


@pytest.mark.parametrize(("steps", "expected"), [
    ([], None),
    ([("dhcp_ignored", {"reason": "selective mode: this MAC may not PXE-boot"})],
     "not answered: selective mode"),
    ([("tftp_error", {"file": "x.efi", "error": "file not found"})], "file not found"),
    ([("initrd", {})], "agent never checked in"),
    ([("kernel", {})], "not the initrd"),
    ([("ipxe_script", {})], "never the discovery kernel"),
])
def test_diagnosis_sentences(steps: list[tuple[str, dict[str, Any]]],
                             expected: str | None) -> None:
    rows = [{"at": 0.0, "last_at": 0.0, "step": s, "detail": d, "count": 1} for s, d in steps]
    result = diagnose(rows, now=10_000.0)
    if expected is None:
        assert result is None
    else:
        assert result is not None and expected in result


async def test_flush_persists_and_reload(store: SqliteStore) -> None:
    log = BootLog(store)
    log.record("aa:bb:cc:dd:ee:ff", "dhcp_discover", {"arch": 0})
    await log.flush()
    doc = await store.get(BOOT, "aa:bb:cc:dd:ee:ff")
    assert doc is not None and doc.data["steps"][0]["step"] == "dhcp_discover"
    again = BootLog(store)
    await again.start()
    assert again.timeline("AA:BB:CC:DD:EE:FF")["steps"][0]["detail"] == {"arch": 0}
    await again.stop()


async def test_boot_api(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(demo_context(tick=3600)))
    recent = await (await client.get("/api/boot")).json()
    stuck = next(r for r in recent if r["mac"] == "3c:ec:ef:4a:19:02")
    assert stuck["machine"] is None  # booted, never registered
    assert any(r["machine"] is not None for r in recent)
    timeline = await (await client.get("/api/boot/3C-EC-EF-4A-19-02")).json()
    assert [s["step"] for s in timeline["steps"]] == ["dhcp_discover", "dhcp_offer"]
    response = await client.get("/api/boot/not-a-mac")
    assert response.status == 400
    discovered = (await (await client.get("/api/machines?state=discovered")).json())["items"]
    boots = await (await client.get(f"/api/machines/{discovered[0]['id']}/boot")).json()
    assert boots[0]["steps"][-1]["step"] == "checkin"
    response = await client.get("/api/boot?limit=0")
    assert response.status == 400


async def test_a_stall_is_written_when_its_deadline_passes(store: SqliteStore) -> None:
    clock = Clock()
    log = BootLog(store, clock=clock)
    log.record("52:54:00:00:00:09", "dhcp_offer", {"loader": "ipxe.efi"})
    await log.flush()
    watch = store.watch([BOOT])
    clock.now += 5
    await log.flush()
    assert watch.queue.empty()  # nothing new, nothing written
    clock.now += 30
    await log.flush()
    change = watch.queue.get_nowait()
    assert change is not None and change.data is not None
    assert "never fetched the loader ipxe.efi" in change.data["diagnosis"]
    watch.close()
