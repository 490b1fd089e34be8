"""Fuzz targets: one function per parser of outside input, bytes in, invariants checked.

A parser may refuse input only with its own error type (``DecodeError``,
``ConfigError``, ...). Any other exception escaping, or a broken invariant
(raised as :class:`Escape`), is a finding. The coverage-guided fuzzer
(``fuzz/run.py``, atheris) and the property tests (tests/test_hostile_input.py,
hypothesis) drive these same functions.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Callable
from typing import Any, Final

from heartbeat.agent.nagios import parse_output, parse_range
from heartbeat.config import AgentConfig, ConfigError, ServerConfig, parse_config
from heartbeat.protocol import (
    CLIENT_IDS,
    SERVER_IDS,
    DecodeError,
    decode_reply,
    decode_with_text,
    valid_host_name,
)
from heartbeat.server.thresholds import MISSING, parse_template, render_template

__all__ = ["DECODE_REASONS", "TARGETS", "Escape"]

DECODE_REASONS: Final = frozenset({
    "empty", "bad_format", "zlib", "too_large", "json", "not_object", "too_deep",
    "missing_id", "missing_name", "bad_name", "bad_field", "bad_id",
})
"""Every drop reason docs/PROTOCOL.md documents; a DecodeError with another is a finding."""


class Escape(AssertionError):
    """A parser broke its contract on some input."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Escape(what)


def _payload(data: bytes) -> bytes:
    """The datagram: ``data`` itself, or, after a leading ``Z``, the rest zlib-compressed.

    Random bytes are almost never a valid zlib stream, so half the inputs are
    made into one, and the fuzzer reaches the JSON and field checks behind it.
    """
    return zlib.compress(data[1:]) if data[:1] == b"Z" else data


def _strict_json(value: Any) -> None:
    """``value`` goes back out as strict JSON (no NaN/Infinity), as the journal writes it."""
    json.dumps(value, allow_nan=False)


def protocol(data: bytes) -> None:
    """``protocol.decode`` (as ingest calls it): a checked message or a known DecodeError."""
    try:
        message, text = decode_with_text(_payload(data))
    except DecodeError as e:
        check(e.reason in DECODE_REASONS, f"undocumented reason {e.reason!r}")
        return
    check(isinstance(message["ID"], str) and message["ID"] != "", "ID")
    check(valid_host_name(message["name"]), "name")
    check(message["ID"] not in CLIENT_IDS or _valid_fields(message), "fields")
    _strict_json(message)
    check(json.loads(text) == message, "the journaled text is not the message")


def _valid_fields(message: dict[str, Any]) -> bool:
    kind = message["ID"]
    if kind == "PLG":
        return isinstance(message["plugins"], dict)
    if kind == "MSG":
        return isinstance(message["text"], str)
    if kind == "RES":
        return isinstance(message["rc"], int) and len(message.get("output", "")) <= 4096
    return True


def reply(data: bytes) -> None:
    """``protocol.decode_reply`` (the agent's side): ACK/CMD/UPD or a known DecodeError."""
    try:
        message = decode_reply(_payload(data))
    except DecodeError as e:
        check(e.reason in DECODE_REASONS, f"undocumented reason {e.reason!r}")
        return
    check(message["ID"] in SERVER_IDS, "ID")
    if message["ID"] == "CMD":
        check(all(isinstance(a, str) for a in message.get("args", [])), "args")
    _strict_json(message)


def config(data: bytes) -> None:
    """``config.parse_config``: a checked config or a ConfigError of one line."""
    cls: type[Any] = AgentConfig if data[:1] == b"A" else ServerConfig
    try:
        parsed = parse_config(cls, data.decode("utf-8", "replace"), "fuzz.yaml")
    except ConfigError as e:
        check("\n" not in str(e) and str(e).startswith("fuzz.yaml"), f"not one line: {e}")
        return
    check(isinstance(parsed, cls), "type")


def perfdata(data: bytes) -> None:
    """``agent.nagios``: output always parses (problems noted); a range is one or ValueError."""
    text = data.decode("utf-8", "replace")
    output = parse_output(text)
    check(all(value.label for value in output.perfdata), "empty label")
    with contextlib.suppress(ValueError):
        parse_range(text)


def thresholds(data: bytes) -> None:
    """The display-template renderer: a template, then field values from a datagram.

    ``data`` is the template text, a NUL, and the fields as JSON (as a PLG
    carries them). A bad template is a ValueError (a ConfigError at start-up);
    rendering never raises and stays small.
    """
    text, _, fields_json = data.partition(b"\0")
    try:
        template = parse_template(text.decode("utf-8", "replace"))
    except ValueError:
        return
    try:
        fields = json.loads(fields_json)
    except (ValueError, RecursionError):
        fields = {}
    if not isinstance(fields, dict):
        fields = {"value": fields}
    out = render_template(template, lambda name: fields.get(name, MISSING))
    check(isinstance(out, str), "not a string")
    fields_used = sum(name is not None for _, name, _, _ in template)
    check(len(out) <= len(text) + fields_used * (1000 + 4 * len(fields_json)), "oversized")


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "protocol": protocol,
    "reply": reply,
    "config": config,
    "perfdata": perfdata,
    "thresholds": thresholds,
}
