"""The one text policy and the one JSON encoder: what text comes in, how JSON goes out.

Everything the server keeps or passes on is UTF-8 JSON: the journal, the store,
the WebSocket feed, the API, notifications and the datagrams it sends. Python's
``json`` reads more than UTF-8 can carry: a JSON escape ``"\\ud800"`` is a lone
surrogate, a ``str`` with no UTF-8 form, and one such value in a host's record
once made every store batch roll back. So both halves live here, side by side:

- :func:`text_problem` is the policy: a decoded value may not hold a lone
  surrogate anywhere (object keys and string values, at any depth), nor a NUL in
  an object key (a name: plugin names, metric keys, field names; SQLite's text
  functions stop at a NUL). ``protocol.decode`` drops such a datagram as
  ``bad_text``, the API refuses such a body with ``bad_text``.
- :func:`json_bytes` is the encoder every part of the server uses. It never
  raises on what the policy lets through, and it stays total on what the server
  builds itself: a lone surrogate that got in some other way becomes U+FFFD and
  a non-finite float ``null``, so its output is always strict JSON in UTF-8.
  orjson writes it (a tenth of the time of ``json``); what orjson refuses (an
  integer outside 64 bits, a key that is not a string, a lone surrogate) the
  standard library writes as before.

Pure code: no reactor, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

import orjson

__all__ = ["json_bytes", "may_break_policy", "text_problem"]

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
"""A dataclass or a datetime is no JSON value here either: orjson refuses them as ``json`` does."""


def may_break_policy(raw: bytes) -> bool:
    """Whether JSON text ``raw`` could decode to a value :func:`text_problem` refuses.

    Valid UTF-8 cannot hold a surrogate, so a lone one only comes from a
    ``\\uD800``-``\\uDFFF`` escape, and a NUL only from ``\\u0000``: a text
    without ``\\u`` (what senders write) is cleared by one scan of its bytes, and
    the walk of :func:`text_problem` runs only behind one of those escapes.
    """
    return b"\\u" in raw and (b"\\ud" in raw or b"\\uD" in raw or b"\\u0000" in raw)


_Path = tuple[Any, ...] | None
"""Where a value sits, as (parent path, key or index): linked, so a step costs O(1)."""


def _render(path: _Path) -> str:
    steps: list[str] = []
    while path is not None:
        path, step = path
        steps.append(f"[{step}]" if isinstance(step, int) else "." + ascii(step)[1:-1])
    text = "".join(reversed(steps)).lstrip(".")
    return (text if len(text) <= 80 else text[:77] + "...") or "the value"


def text_problem(value: Any) -> str | None:
    """Why ``value`` (decoded JSON) cannot be stored or sent on, or None when it can.

    The answer names the place, e.g. ``"a NUL in the key plugins.cpu\\x00"`` (keys
    written with ASCII escapes, so a log line stays one readable line).
    """
    stack: list[tuple[Any, _Path]] = [(value, None)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return f"a lone surrogate in {_render(path)}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str):
                    if "\x00" in key:
                        return f"a NUL in the key {_render((path, key))}"
                    if _SURROGATE.search(key):
                        return f"a lone surrogate in the key {_render((path, key))}"
                if isinstance(child, str | dict | list):
                    stack.append((child, (path, key)))
        elif isinstance(item, list):
            stack.extend((child, (path, i)) for i, child in enumerate(item)
                         if isinstance(child, str | dict | list))
    return None


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``; strict JSON whatever the strings and floats hold.

    Raises only for what JSON cannot express at all (a set, a cycle): a bug in
    the caller, never a property of received text. A float is written with the
    digits of its ``repr`` (it reads back equal), though not always in its
    form: ``2.5e-7`` where ``repr`` says ``2.5e-07``, ``0.00001`` for ``1e-05``.
    """
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: the standard library's turn
        pass
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except (UnicodeEncodeError, ValueError):  # a lone surrogate; NaN or an infinity
        return _ENCODER.encode(_repaired(value)).encode("utf-8")


def _repaired(value: Any) -> Any:
    """``value`` with lone surrogates as U+FFFD and non-finite floats as None."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_repaired(k): _repaired(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_repaired(v) for v in value]
    return value
