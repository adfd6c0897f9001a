"""What DNS and the operator say about a machine, as plain data: TXT strings in RFC 1464 style
(``dragonfly:tags=ceph,nvme``, ``dragonfly:role=ceph-osd``) and operator rules mapping hostname
patterns to tags and a role (``^web-\\d+$ role=web tag=nginx tag=edge``).

A rule is written as one string: a regular expression (no spaces: use ``\\s``), then
``role=NAME`` and any number of ``tag=NAME`` words. No commas, so a rule survives the
comma-separated ``DRAGONFLY_DNS_RULES`` environment variable."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dragonfly.domain.model import validate_tag
from dragonfly.errors import InvalidInput

TXT_PREFIX = "dragonfly:"
ROLE_MAX = 64
_ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Rule:
    text: str
    pattern: re.Pattern[str]
    role: str = ""
    tags: tuple[str, ...] = ()


@dataclass
class TxtFacts:
    """Tags and role read from a name's TXT strings, and what could not be used (with why)."""

    tags: list[str] = field(default_factory=list)
    role: str = ""
    ignored: list[str] = field(default_factory=list)


def validate_role(value: str) -> str:
    role = value.strip()
    if not _ROLE.match(role):
        raise InvalidInput(f"a role is 1-{ROLE_MAX} letters, digits, '.', '_' or '-', "
                           f"starting with a letter or digit: {value!r}")
    return role


def parse_rule(text: str) -> Rule:
    """One operator rule, or InvalidInput saying what is wrong with it."""
    words = text.split()
    if len(words) < 2:
        raise InvalidInput(f"dns.rules: {text!r} needs a pattern and role=... or tag=...")
    try:
        pattern = re.compile(words[0])
    except re.error as exc:
        raise InvalidInput(f"dns.rules: {words[0]!r} is not a regular expression: {exc}"
                           ) from None
    role = ""
    tags: list[str] = []
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in ("role", "tag"):
            raise InvalidInput(f"dns.rules: in {text!r}, {word!r} is neither role=... nor "
                               "tag=...")
        if key == "role":
            if role:
                raise InvalidInput(f"dns.rules: {text!r} names more than one role")
            role = validate_role(value)
        elif (tag := validate_tag(value)) not in tags:
            tags.append(tag)
    return Rule(text, pattern, role, tuple(tags))


def parse_rules(texts: list[str]) -> list[Rule]:
    return [parse_rule(text) for text in texts]


def matching_rules(hostname: str, rules: list[Rule]) -> list[Rule]:
    """The rules whose pattern matches the hostname (``re.search``: anchor with ^ and $)."""
    return [rule for rule in rules if rule.pattern.search(hostname)]


def parse_txt(strings: list[str]) -> TxtFacts:
    """Read ``dragonfly:key=value`` strings; other TXT records (SPF, verification tokens) are
    not ours and are passed over silently. A bad value of ours is listed in ``ignored``."""
    facts = TxtFacts()
    for text in strings:
        if not text.lower().startswith(TXT_PREFIX):
            continue
        key, sep, value = text[len(TXT_PREFIX):].partition("=")
        key = key.strip().lower()
        try:
            if not sep:
                raise InvalidInput("no '='")
            if key == "tags":
                for raw in value.split(","):
                    if raw.strip() and (tag := validate_tag(raw)) not in facts.tags:
                        facts.tags.append(tag)
            elif key == "role":
                role = validate_role(value)
                if facts.role and facts.role != role:
                    raise InvalidInput(f"a second role (already {facts.role!r})")
                facts.role = role
            else:
                raise InvalidInput(f"unknown key {key!r} (known: tags, role)")
        except InvalidInput as exc:
            facts.ignored.append(f"{text!r}: {exc.message}")
    return facts
