"""Applying DNS-driven identity to a machine: hostname from the PTR name, tags and role from
the name's TXT records and the operator's rules, each value recorded with its source in
``Machine.identity`` (shown on the machine page). Re-read at every boot; values that DNS or a
rule gave earlier and no longer gives are taken back, values an operator set by hand are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dragonfly.config import Config
from dragonfly.dnsid.resolver import DnsAnswer, DnsLookup
from dragonfly.dnsid.rules import Rule, matching_rules, parse_rules, parse_txt
from dragonfly.domain.fleet import Fleet
from dragonfly.domain.model import HistoryEvent, Machine
from dragonfly.domain.naming import short_hostname

log = logging.getLogger(__name__)


@dataclass
class Identity:
    """What DNS and the rules say a machine at an address is: each value with its source."""

    ip: str
    fqdn: str | None = None
    name: tuple[str, str] | None = None  # (value, source)
    role: tuple[str, str] | None = None
    tags: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # TXT strings or rules not used, and why
    error: str = ""
    at: float = 0.0
    elapsed: float = 0.0


def identify(answer: DnsAnswer, rules: list[Rule], current_name: str) -> Identity:
    """Pure: the identity an answer and the rules give. Rules match the PTR's hostname, or the
    machine's current name when DNS has none."""
    found = Identity(answer.ip, answer.fqdn, error=answer.error, at=answer.at,
                     elapsed=answer.elapsed)
    if answer.error:
        return found
    hostname = current_name
    if answer.fqdn:
        short = short_hostname(answer.fqdn)
        if short is None:
            found.notes.append(f"PTR name {answer.fqdn} is not a usable hostname")
        else:
            found.name = (short, f"DNS PTR of {answer.ip} ({answer.fqdn.rstrip('.')})")
            hostname = short
        txt = parse_txt(list(answer.txt))
        source = f"DNS TXT of {answer.fqdn.rstrip('.')}"
        found.tags = [(tag, source) for tag in txt.tags]
        if txt.role:
            found.role = (txt.role, source)
        found.notes.extend(txt.ignored)
    for rule in matching_rules(hostname, rules):
        source = f'rule "{rule.text}"'
        for tag in rule.tags:
            if tag not in {t for t, _ in found.tags}:
                found.tags.append((tag, source))
        if rule.role and found.role is None:  # a TXT role (per host) beats a rule's
            found.role = (rule.role, source)
    return found


def _apply(machine: Machine, found: Identity, name_free: bool) -> list[str]:
    """Change ``machine`` in place; return what changed, in words (empty: nothing)."""
    before = machine.identity or {}
    changes: list[str] = []
    record: dict[str, Any] = {"ip": found.ip, "fqdn": found.fqdn, "at": found.at,
                              "elapsed": round(found.elapsed, 3), "error": found.error,
                              "notes": found.notes}
    if found.error:  # DNS did not answer: keep every value as it was, say why
        for key in ("name", "role", "tags"):
            if key in before:
                record[key] = before[key]
        machine.identity = record
        return changes
    if found.name is not None:
        value, source = found.name
        if machine.name != value:
            if name_free:
                changes.append(f"name {machine.name} → {value}")
                machine.name = value
            else:
                found.notes.append(f"the name {value} is already another machine's")
        if machine.name == value:
            record["name"] = {"value": value, "source": source}
    old_auto = {t["value"] for t in before.get("tags", [])}
    new_auto = [t for t, _ in found.tags]
    kept = [t for t in machine.tags if t not in old_auto or t in new_auto]
    tags = kept + [t for t in new_auto if t not in kept]
    added = [t for t in tags if t not in machine.tags]
    removed = [t for t in machine.tags if t not in tags]
    if added:
        changes.append("tags +" + " +".join(added))
    if removed:
        changes.append("tags -" + " -".join(removed))
    machine.tags = tags
    record["tags"] = [{"value": t, "source": s} for t, s in found.tags]
    if found.role is not None:
        value, source = found.role
        if machine.role != value:
            changes.append(f"role {machine.role or '(none)'} → {value}")
            machine.role = value
        record["role"] = {"value": value, "source": source}
    elif "role" in before and machine.role == before["role"].get("value"):
        changes.append(f"role {machine.role} removed (DNS and the rules no longer give it)")
        machine.role = ""
    machine.identity = record
    return changes


class DnsIdentity:
    """The service the boot edge and the agent check-in call with a machine's boot address."""

    def __init__(self, lookup: DnsLookup, rules: list[Rule]) -> None:
        self.lookup = lookup
        self.rules = rules

    @classmethod
    def from_config(cls, config: Config) -> DnsIdentity | None:
        if not config["dns.enabled"]:
            return None
        lookup = DnsLookup(list(config["dns.servers"]), config["dns.timeout_ms"] / 1000,
                           float(config["dns.cache_seconds"]))
        return cls(lookup, parse_rules(list(config["dns.rules"])))

    async def refresh(self, fleet: Fleet, machine: Machine, ip: str | None) -> Machine:
        """Look the address up and apply what it gives; on any failure the machine is
        returned as it was (a boot never waits longer than the look-up's timeout)."""
        if not ip:
            return machine
        try:
            answer = await self.lookup.lookup(ip)
            found = identify(answer, self.rules, machine.name)
            name_free = found.name is None or not _taken_by_other(fleet, found.name[0],
                                                                  machine)

            def mutate(m: Machine) -> HistoryEvent | None:
                changes = _apply(m, found, name_free)
                if not changes:
                    return None
                return HistoryEvent("", m.id, 0.0, "identity",
                                    "DNS identity: " + "; ".join(changes),
                                    {"changes": changes, "ip": ip, "fqdn": found.fqdn})
            return await fleet.update_machine(machine.id, mutate)
        except Exception:
            log.exception("DNS identity of %s (%s) not applied", machine.name, ip)
            return machine


def _taken_by_other(fleet: Fleet, name: str, machine: Machine) -> bool:
    return name != machine.name and fleet.name_taken(name)
