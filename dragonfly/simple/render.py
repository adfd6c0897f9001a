"""Answer files: the built-in jinja2 template of each family (package data in ``files/``), or
an operator's override of it, rendered over an ``InstallSpec``'s facts in the sandboxed,
strict environment user-data templates use. Whatever the template, the output is refused when
it carries a plaintext password."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from dragonfly.errors import InvalidInput
from dragonfly.simple.names import ANSWER_FILES, KINDS
from dragonfly.simple.spec import InstallSpec
from dragonfly.templates.render import check_syntax, render

OVERRIDE_MAX = 64 * 1024

# What a plaintext password looks like in each format (a hashed one is fine).
_PLAINTEXT = {
    "debian": re.compile(r"^\s*d-i\s+passwd/(?:root-password|user-password)(?:-again)?\s",
                         re.MULTILINE),
    "rhel": re.compile(r"--plaintext\b|^\s*(?:rootpw|user)\b(?!.*--(?:iscrypted|lock))"
                       r".*--password\b|^\s*rootpw\s+(?!--)\S", re.MULTILINE),
    # root_password / root-password (root_password_hashed is the hash).
    "proxmox": re.compile(r"^\s*[\"']?root[-_]password[\"']?\s*=", re.MULTILINE),
    "ubuntu": re.compile(r"plain_text_passwd|chpasswd|^\s*password:(?![ \t]*[\"']?[$!])",
                         re.MULTILINE),
}


@cache
def builtin_template(family: str) -> str:
    name = ANSWER_FILES.get(family)
    if name is None:
        raise InvalidInput(f"no answer file for the {family!r} family")
    return (files("dragonfly.simple") / "files" / f"{name}.j2").read_text(encoding="utf-8")


def plaintext_problem(family: str, text: str) -> str | None:
    match = _PLAINTEXT[family].search(text)
    if match is None:
        return None
    line = text.count("\n", 0, match.start()) + 1
    return (f"line {line} carries a plaintext password: Dragonfly never serves one "
            "(use a crypt(3) hash or SSH keys)")


def check_override(family: str, text: object) -> str:
    """An operator's template for ``family``, or InvalidInput saying why it is refused."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("an override is the non-empty text of a jinja2 template")
    if len(text) > OVERRIDE_MAX:
        raise InvalidInput(f"an override is at most {OVERRIDE_MAX} characters")
    if family not in ANSWER_FILES:
        raise InvalidInput(f"no answer file for the {family!r} family")
    problem = check_syntax(text)
    if problem:
        raise InvalidInput(problem)
    return text


def render_answer(spec: InstallSpec, override: str | None = None) -> str:
    """The answer file for ``spec``: InvalidInput when the template does not render or the
    result would carry a plaintext password."""
    template = override or builtin_template(spec.family)
    text = render(template, spec.facts(), what=KINDS[spec.family])
    problem = plaintext_problem(spec.family, text)
    if problem:
        raise InvalidInput(f"the {KINDS[spec.family]} is refused: {problem}")
    return text
