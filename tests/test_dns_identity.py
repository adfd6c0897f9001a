"""DNS-driven identity without the network: TXT strings and hostname rules as data, what an
answer gives a machine (and what it takes back at the next boot), the settings' validation.
The real resolver (dnsmasq in a namespace) is in tests/test_dns_identity_lab.py."""

from __future__ import annotations

import asyncio
import html
import socket
from typing import Any

import pytest

from dragonfly.config import Config
from dragonfly.dnsid.resolver import DnsAnswer, DnsLookup
from dragonfly.dnsid.rules import parse_rule, parse_rules, parse_txt
from dragonfly.dnsid.service import DnsIdentity, _apply, identify
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import Machine, State
from dragonfly.errors import InvalidInput
from dragonfly.store import SqliteStore


def test_txt_strings_give_tags_and_role_and_skip_foreign_records() -> None:
    facts = parse_txt(["v=spf1 -all", "dragonfly:tags=ceph, nvme,ceph", "DRAGONFLY:role=osd",
                       "dragonfly:colour=blue", "dragonfly:role"])
    assert facts.tags == ["ceph", "nvme"]
    assert facts.role == "osd"
    assert len(facts.ignored) == 2
    assert "unknown key 'colour'" in facts.ignored[0]
    assert "no '='" in facts.ignored[1]


def test_a_second_different_role_is_ignored_and_said() -> None:
    facts = parse_txt(["dragonfly:role=a", "dragonfly:role=b"])
    assert facts.role == "a" and "second role" in facts.ignored[0]


def test_rules_parse_and_refuse_precisely() -> None:
    rule = parse_rule(r"^web-\d+$ role=web tag=nginx tag=edge tag=nginx")
    assert rule.role == "web" and rule.tags == ("nginx", "edge")
    assert rule.pattern.search("web-12") and not rule.pattern.search("db-1")
    for text, message in ((r"^web", "needs a pattern"), ("^(web role=x", "not a regular"),
                          (r"^web colour=blue", "neither role"),
                          (r"^web role=a role=b", "more than one role"),
                          (r"^web role=-bad", "a role is")):
        with pytest.raises(InvalidInput, match=message):
            parse_rule(text)


def test_config_validates_dns_settings() -> None:
    env = {"DRAGONFLY_DNS_RULES": r"^web-\d+$ role=web tag=a,^db role=db",
           "DRAGONFLY_DNS_SERVERS": "10.0.0.53"}
    config = Config.load(None, env=env)
    assert [r.role for r in parse_rules(config["dns.rules"])] == ["web", "db"]
    with pytest.raises(InvalidInput, match="not a regular expression"):
        Config.load(None, env={"DRAGONFLY_DNS_RULES": "^(x role=y"})
    with pytest.raises(InvalidInput, match="not an IP address"):
        Config.load(None, env={"DRAGONFLY_DNS_SERVERS": "dns.example"})
    with pytest.raises(InvalidInput, match="timeout_ms"):
        Config.load(None, env={"DRAGONFLY_DNS_TIMEOUT_MS": "0"})


def _machine(**over: object) -> Machine:
    m = Machine(id="m1", name="brave-falcon-42", state=State.READY, mac="52:54:00:00:00:01")
    for k, v in over.items():
        setattr(m, k, v)
    return m


RULES = parse_rules([r"^web-\d+$ role=web tag=frontend", r"^web- tag=edge role=other"])


def test_identify_sources_and_precedence() -> None:
    answer = DnsAnswer("10.0.0.7", "web-07.lab.example.",
                       ("dragonfly:tags=ceph,nvme", "dragonfly:role=ceph-osd"))
    found = identify(answer, RULES, "brave-falcon-42")
    assert found.name == ("web-07", "DNS PTR of 10.0.0.7 (web-07.lab.example)")
    assert found.role == ("ceph-osd", "DNS TXT of web-07.lab.example")  # TXT beats rules
    assert [t for t, _ in found.tags] == ["ceph", "nvme", "frontend", "edge"]
    assert dict(found.tags)["frontend"] == r'rule "^web-\d+$ role=web tag=frontend"'
    # No TXT role: the first matching rule's.
    found = identify(DnsAnswer("10.0.0.7", "web-07.lab.example."), RULES, "x")
    assert found.role is not None and found.role[0] == "web"
    # No PTR name: rules match the machine's current name.
    found = identify(DnsAnswer("10.0.0.7"), RULES, "web-3")
    assert found.name is None and found.role is not None and found.role[0] == "web"


def test_apply_keeps_operator_values_and_takes_back_what_dns_no_longer_gives() -> None:
    m = _machine(tags=["rack-4"], role="")
    answer = DnsAnswer("10.0.0.7", "web-07.lab.example.", ("dragonfly:tags=ceph",))
    changes = _apply(m, identify(answer, RULES, m.name), name_free=True)
    assert m.name == "web-07" and m.role == "web"
    assert m.tags == ["rack-4", "ceph", "frontend", "edge"]
    assert any("name brave-falcon-42 → web-07" in c for c in changes)
    assert m.identity["name"]["value"] == "web-07"
    # Next boot: the TXT record is gone and the name no longer matches the rules.
    answer = DnsAnswer("10.0.0.7", "db-07.lab.example.")
    changes = _apply(m, identify(answer, RULES, m.name), name_free=True)
    assert m.name == "db-07" and m.tags == ["rack-4"] and m.role == ""
    assert any("role web removed" in c for c in changes)
    # Nothing new: no change reported.
    assert _apply(m, identify(answer, RULES, m.name), name_free=True) == []


def test_apply_after_a_failed_lookup_changes_nothing_but_says_why() -> None:
    m = _machine()
    _apply(m, identify(DnsAnswer("10.0.0.7", "web-07.x.", ("dragonfly:role=db",)), [], m.name),
           True)
    before = (m.name, list(m.tags), m.role)
    changes = _apply(m, identify(DnsAnswer("10.0.0.7", error="no answer"), [], m.name), True)
    assert changes == [] and (m.name, m.tags, m.role) == before
    assert m.identity["error"] == "no answer" and m.identity["role"]["value"] == "db"


def test_a_name_already_taken_is_not_stolen() -> None:
    m = _machine()
    _apply(m, identify(DnsAnswer("10.0.0.7", "web-07.x."), [], m.name), name_free=False)
    assert m.name == "brave-falcon-42" and "name" not in m.identity
    assert any("already another machine's" in n for n in m.identity["notes"])


async def test_refresh_writes_history_and_survives_a_broken_lookup() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    fleet = Fleet(store)
    await fleet.start()
    try:
        machine = await fleet.add_machine(_machine())
        lookup = DnsLookup([], 1.0, 60)
        # A stand-in answer in the cache (the real resolver is the lab test's).
        lookup._cache["10.0.0.7"] = (lookup.clock() + 60, DnsAnswer(
            "10.0.0.7", "web-07.lab.", ("dragonfly:tags=ceph",)))
        service = DnsIdentity(lookup, RULES)
        machine = await service.refresh(fleet, machine, "10.0.0.7")
        assert machine.name == "web-07" and "ceph" in machine.tags
        history = await fleet.history(machine.id)
        assert history[0].kind == "identity" and "web-07" in history[0].message
        assert await service.refresh(fleet, machine, "not-an-ip") is not None
        assert fleet.get_machine(machine.id).identity["error"].endswith("not an IP address")
    finally:
        fleet.stop()
        await store.close()


async def test_lookup_of_a_resolver_that_never_answers_returns_within_the_timeout() -> None:
    # A UDP socket that reads queries and never answers: a real silent peer on loopback.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        lookup = DnsLookup(["127.0.0.1"], 0.3, 60, port=silent.getsockname()[1])
        started = asyncio.get_running_loop().time()
        answer = await lookup.lookup("10.0.0.7")
        assert asyncio.get_running_loop().time() - started < 1.0
        assert answer.error == "no answer from DNS within 0.3 s" and answer.fqdn is None
        silent.settimeout(2)
        assert silent.recv(512)  # the query did arrive
        assert lookup.cached("10.0.0.7") is answer  # the next boot does not wait again
    finally:
        silent.close()


async def test_machine_page_shows_each_value_with_its_source(aiohttp_client: Any) -> None:
    from dragonfly.app import create_app
    from dragonfly.compose import demo_context
    from dragonfly.context import CTX

    client = await aiohttp_client(create_app(demo_context(tick=3600)))
    fleet: Fleet = client.app[CTX].fleet
    machine = await fleet.add_machine(_machine(id="dnsid1", name="page-test",
                                               mac="52:54:00:00:aa:01"))
    service = DnsIdentity(DnsLookup([], 1.0, 60), RULES)
    service.lookup._cache["10.0.0.9"] = (service.lookup.clock() + 60, DnsAnswer(
        "10.0.0.9", "web-09.lab.example.", ("dragonfly:tags=ceph", "dragonfly:colour=x")))
    await service.refresh(fleet, machine, "10.0.0.9")
    response = await client.get("/machines/dnsid1")
    page = html.unescape(await response.text())
    assert response.status == 200
    assert "Identity from DNS" in page and "web-09.lab.example." in page
    assert "from DNS PTR of 10.0.0.9 (web-09.lab.example)" in page
    assert "from DNS TXT of web-09.lab.example" in page
    assert 'from rule "^web-\\d+$ role=web tag=frontend"' in page
    assert "unknown key 'colour'" in page
    # A machine never looked up says when it will be.
    other = await fleet.add_machine(_machine(id="dnsid2", name="plain",
                                             mac="52:54:00:00:aa:02"))
    page = await (await client.get(f"/machines/{other.id}")).text()
    assert "Not looked up yet" in page
