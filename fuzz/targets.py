"""Fuzz targets: one function per parser of outside input, bytes in, invariants checked.

A parser may refuse input only with its own error type (``DecodeError``,
``ConfigError``, ...). Any other exception escaping, or a broken invariant
(raised as :class:`Escape`), is a finding. Each target returns what the parser
made of the input (None: refused), for the property tests to reason about. The
coverage-guided fuzzer (``fuzz/run.py``, atheris) and the property tests
(tests/test_hostile_input.py, hypothesis) drive these same functions. The
``server`` target is the whole service tree (fuzz/server.py; its property test
is tests/test_whole_server_fuzz.py).
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Callable
from typing import Any, Final

from fuzz.invariants import Escape, check
from fuzz.server import whole_server
from heartbeat.agent.nagios import CheckOutput, parse_output, parse_range
from heartbeat.config.agent import AgentConfig
from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.protocol import (
    CLIENT_IDS,
    SERVER_IDS,
    DecodeError,
    Keyring,
    decode_datagram,
    decode_signed_reply,
    seal,
    valid_host_name,
)
from heartbeat.server.thresholds.templates import MISSING, parse_template, render_template
from heartbeat.text import text_problem

__all__ = ["DECODE_REASONS", "TARGETS", "Escape", "check"]

DECODE_REASONS: Final = frozenset({
    "empty", "bad_format", "zlib", "too_large", "json", "not_object", "too_deep",
    "missing_id", "missing_name", "bad_name", "bad_field", "bad_id", "bad_text",
    "bad_envelope", "unknown_key", "bad_signature", "stale",
})
"""Every drop reason docs/PROTOCOL.md documents; a DecodeError with another is a finding."""


KEY: Final = b"fuzz-fleet-key-0123456789"
KEYRING: Final = Keyring({"fleet": KEY}, window=120.0)
NOW: Final = 1_700_000_000.0


def _payload(data: bytes) -> bytes:
    """The datagram: ``data`` itself, or made from it by its first byte.

    Random bytes are almost never a valid zlib stream or a validly signed
    envelope, so after a leading ``Z`` the rest is zlib-compressed and after a
    leading ``S`` it is signed with the fuzz key (``SZ``: both), and the fuzzer
    reaches the checks behind them. Raw ``HBS1...`` inputs exercise the envelope.
    """
    signed = data[:1] == b"S"
    if signed:
        data = data[1:]
    if data[:1] == b"Z":
        data = zlib.compress(data[1:])
    return seal(data, "fleet", KEY, int(NOW * 1e6)) if signed else data


def _strict_json(value: Any) -> None:
    """``value`` goes back out as strict UTF-8 JSON (no NaN/Infinity, no lone surrogate)
    with no repair needed, and holds no NUL in a key: the text policy held."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    check(text_problem(value) is None, "the text policy let a value through")


def protocol(data: bytes) -> dict[str, Any] | None:
    """``protocol.decode`` as ingest calls it (``decode_datagram``, with keys): a checked
    message, or None for a known DecodeError."""
    try:
        message, text, _ = decode_datagram(_payload(data), keyring=KEYRING, now=NOW)
    except DecodeError as e:
        check(e.reason in DECODE_REASONS, f"undocumented reason {e.reason!r}")
        return None
    check(isinstance(message["ID"], str) and message["ID"] != "", "ID")
    check(valid_host_name(message["name"]), "name")
    check(message["ID"] not in CLIENT_IDS or _valid_fields(message), "fields")
    _strict_json(message)
    check(json.loads(text) == message, "the journaled text is not the message")
    every_value = json.loads(text, object_pairs_hook=lambda pairs: [v for _, v in pairs])
    check(text_problem(every_value) is None, "the journaled text shadows refused text")
    return message


def _valid_fields(message: dict[str, Any]) -> bool:
    kind = message["ID"]
    if kind == "PLG":
        return isinstance(message["plugins"], dict)
    if kind == "MSG":
        return isinstance(message["text"], str)
    if kind == "RES":
        return isinstance(message["rc"], int) and len(message.get("output", "")) <= 4096
    return True


def reply(data: bytes) -> dict[str, Any] | None:
    """``protocol.decode_signed_reply`` (the agent's side): ACK/CMD/UPD, or None."""
    try:
        message, _ = decode_signed_reply(_payload(data), KEYRING, NOW)
    except DecodeError as e:
        check(e.reason in DECODE_REASONS, f"undocumented reason {e.reason!r}")
        return None
    check(message["ID"] in SERVER_IDS, "ID")
    if message["ID"] == "CMD":
        check(all(isinstance(a, str) for a in message.get("args", [])), "args")
    _strict_json(message)
    return message


def config(data: bytes) -> Any:
    """``config.parse_config``: a checked config, or None for a ConfigError of one line.

    A leading ``A`` reads the rest as an agent config, else it is a server's.
    """
    cls: type[Any] = AgentConfig if data[:1] == b"A" else ServerConfig
    try:
        parsed = parse_config(cls, data.decode("utf-8", "replace"), "fuzz.yaml")
    except ConfigError as e:
        check("\n" not in str(e) and str(e).startswith("fuzz.yaml"), f"not one line: {e}")
        return None
    check(isinstance(parsed, cls), "type")
    return parsed


def perfdata(data: bytes) -> CheckOutput:
    """``agent.nagios``: output always parses (problems noted); a range is one or ValueError."""
    text = data.decode("utf-8", "replace")
    output = parse_output(text)
    check(all(value.label for value in output.perfdata), "empty label")
    with contextlib.suppress(ValueError):
        parse_range(text)
    return output


def thresholds(data: bytes) -> str | None:
    """The display-template renderer: a template, then field values from a datagram.

    ``data`` is the template text, a NUL, and the fields as JSON (as a PLG
    carries them). A bad template is a ValueError (a ConfigError at start-up);
    rendering never raises and stays small.
    """
    text, _, fields_json = data.partition(b"\0")
    try:
        template = parse_template(text.decode("utf-8", "replace"))
    except ValueError:
        return None
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
    return out


TARGETS: Final[dict[str, Callable[[bytes], Any]]] = {
    "protocol": protocol,
    "reply": reply,
    "config": config,
    "perfdata": perfdata,
    "thresholds": thresholds,
    "server": whole_server,
}
