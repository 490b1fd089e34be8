"""Display templates: the ``display:`` text of a rule, checked once, filled per alert.

A template is ``str.format`` syntax split once at config time; rendering never
raises, so a notification is never lost to a template. Pure code.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from typing import Any, Final, TypeAlias

__all__ = ["MISSING", "Template", "parse_template", "render_template", "show_value"]

_FORMATTER: Final = string.Formatter()
_HUGE_WIDTH: Final = re.compile(r"\d{4,}")
MISSING: Final = object()
"""What a template lookup returns for a field it does not know."""


def show_value(value: Any) -> str:
    """A metric value as messages show it: floats to two decimals, ``85.0`` stays ``85.0``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(round(value, 2)) if math.isfinite(value) else repr(value)
    return str(value)


Template: TypeAlias = tuple[tuple[str, str | None, str, str | None], ...]
"""(literal, field name, format spec, conversion) per part, as ``string.Formatter`` splits it."""


def parse_template(text: str) -> Template:
    """Split a ``str.format`` template once; ValueError names what is wrong with it.

    Widths and precisions stop at 999: ``{value:>100000000}`` would make every
    message of the rule 100 MB.
    """
    parts = []
    for literal, name, spec, conversion in _FORMATTER.parse(text):
        if name is not None and not name.strip():
            raise ValueError("a field needs a name, e.g. {value}; '{}' names none")
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(f"unknown conversion !{conversion} in {{{name}}}")
        if spec and _HUGE_WIDTH.search(spec):
            raise ValueError(f"width or precision over 999 in {{{name}:{spec}}}")
        parts.append((literal, name, spec or "", conversion))
    return tuple(parts)


def render_template(template: Template, lookup: Callable[[str], Any]) -> str:
    """Fill ``template``; a field ``lookup`` does not know renders as its own name.

    Never raises: a format spec that does not fit the value falls back to the
    plain value, so a notification is never lost to a template.
    """
    out: list[str] = []
    for literal, name, spec, conversion in template:
        out.append(literal)
        if name is None:
            continue
        value = lookup(name)
        if value is MISSING:
            out.append(name)
            continue
        if conversion == "r":
            value = repr(value)
        elif conversion == "a":
            value = ascii(value)
        elif conversion == "s":
            value = str(value)
        if not spec:
            out.append(show_value(value))
            continue
        try:
            out.append(format(value, spec))
        except (ValueError, TypeError, OverflowError):
            out.append(show_value(value))
    return "".join(out)
