"""Jinja2 for operator-written user-data: sandboxed, strict, and failing with the line.

User-data templates are operator input stored in the appliance and rendered by it, so they
run in jinja2's ``SandboxedEnvironment`` (no attribute access to internals, bounded ``range``)
with ``StrictUndefined`` (a misspelt fact is an error at preview time, not an empty string in
a machine's cloud-config). Every failure becomes ``InvalidInput`` naming the line.
"""

from __future__ import annotations

import functools
import re
import types
from typing import TYPE_CHECKING, Any

from dragonfly.errors import InvalidInput

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

# The file name jinja2 gives templates made from strings; frames of the rendered template
# carry it in tracebacks, with the template's own line numbers (jinja2 rewrites them).
_TEMPLATE_FILE = "<template>"
MAX_OUTPUT = 1 << 20

# Words that mean a plaintext password in user-data (cloud-config keys, or the command a
# script would pipe one into). Dragonfly never writes one, nor lets an operator template.
_PASSWORDS = re.compile(r"plain_text_passwd|chpasswd", re.IGNORECASE)



@functools.cache
def _env() -> SandboxedEnvironment:
    """Made at the first template checked or rendered: jinja2 is not needed to start."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                keep_trailing_newline=True)


def check_syntax(text: str) -> str | None:
    """None when ``text`` parses as a jinja2 template, else a sentence with the line."""
    if not text:
        return None
    from jinja2 import TemplateSyntaxError

    try:
        _env().parse(text)
    except TemplateSyntaxError as exc:
        return f"jinja2 syntax error on line {exc.lineno}: {exc.message}"
    return None


def password_problem(text: str) -> str | None:
    match = _PASSWORDS.search(text)
    if match:
        return (f"mentions {match.group(0)}: Dragonfly never writes a plaintext password into "
                "user-data; use SSH keys (or a hashed passwd for a console login)")
    return None


def _line_of(exc: BaseException) -> int | None:
    tb: types.TracebackType | None = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(text: str, facts: dict[str, Any], what: str = "user_data") -> str:
    """``text`` rendered over ``facts``; InvalidInput with the line when it cannot be."""
    if not text:
        return ""
    from jinja2 import TemplateError, TemplateSyntaxError

    try:
        out = _env().from_string(text).render(facts)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"{what}: jinja2 syntax error on line {exc.lineno}: "
                           f"{exc.message}") from None
    except TemplateError as exc:  # undefined names, sandbox refusals
        line = _line_of(exc)
        where = f" on line {line}" if line else ""
        raise InvalidInput(f"{what}: cannot render{where}: {exc}",
                           {"line": line, "facts": sorted(facts)}) from None
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        line = _line_of(exc)
        where = f" on line {line}" if line else ""
        raise InvalidInput(f"{what}: cannot render{where}: {type(exc).__name__}: {exc}",
                           {"line": line}) from None
    if len(out) > MAX_OUTPUT:
        raise InvalidInput(f"{what}: renders to more than {MAX_OUTPUT} bytes")
    return out
