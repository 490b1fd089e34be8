"""Property tests on every parser of outside input: only the parser's own error escapes.

The same targets as the coverage-guided fuzzer (fuzz/targets.py, ``make fuzz``),
driven here by hypothesis with inputs shaped like the real thing: JSON objects
with the protocol's fields and hostile values, YAML mappings with the config's
keys, Monitoring Plugins output.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import pytest
import yaml
from fuzz import targets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from heartbeat.config.agent import AgentConfig
from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.protocol import DecodeError, decode

PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

_characters = (st.characters(exclude_categories=())  # lone surrogates included
               | st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\x00"]))
_text = st.text(_characters, max_size=30)
"""Any text, with the lone surrogates and NUL hypothesis leaves out by default."""
_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
            | st.sampled_from([10**308 * 10, -(10**400), 2**63, -2**63 - 1])
            | st.floats(allow_nan=True, allow_infinity=True) | _text)
_values = st.recursive(_scalars, lambda children: st.lists(children, max_size=4)
                       | st.dictionaries(st.text(_characters, max_size=10), children,
                                         max_size=4),
                       max_leaves=25)
_fields = st.sampled_from(["ID", "name", "seq", "ts", "version", "interval", "rtt",
                           "boot_time", "text", "level", "plugins", "cmd_id", "rc", "output",
                           "args", "cmd", "server_ts", "truncated"])
_ids = st.sampled_from(["HTB", "BOOT", "SHUT", "MSG", "PLG", "RES", "ACK", "CMD", "UPD", "",
                        "XYZ"])


@st.composite
def messages(draw: Any) -> dict[str, Any]:
    """A JSON object with the protocol's field names and values of any type."""
    message: dict[str, Any] = draw(st.dictionaries(_fields, _values, max_size=8))
    if draw(st.booleans()):
        message["ID"] = draw(_ids)
    if draw(st.booleans()):
        message["name"] = draw(st.sampled_from(["web1", "a" * 254, "bad name", ""]))
    return message


_framing = st.sampled_from([b"", b"Z", b"S", b"SZ"])
"""How fuzz/targets.py frames the text: as it is, zlib'd, signed, or both."""


def _dumps(message: dict[str, Any], framing: bytes,
           shadowed: dict[str, Any] | None = None) -> bytes:
    """The datagram; ``shadowed`` fields go first, so the message's own keys repeat them."""
    text = json.dumps(message).encode()  # NaN/Infinity allowed: the decoder must refuse them
    if shadowed and text != b"{}":
        text = json.dumps(shadowed).encode()[:-1] + b"," + text[1:]
    return framing + text


@PROPERTY
@given(messages(), _framing)
@example({"ID": "HTB", "name": "h", "interval": float("nan")}, b"")
@example({"ID": "PLG", "name": "h", "plugins": {"p": 1e308 * 10}}, b"SZ")
@example({"ID": "RES", "name": "h", "cmd_id": 1, "rc": 0, "output": "x" * 5000}, b"S")
@example({"ID": "HTB", "name": "x", "interval": 30, "version": "\ud800"}, b"")
@example({"ID": "RES", "name": "h", "cmd_id": 1, "rc": 0, "output": "x" * 5000 + "\ud800"},
         b"Z")
@example({"ID": "PLG", "name": "h", "plugins": {"p\x00": {"\udc80": 1}}}, b"SZ")
@example({"ID": "HTB", "name": "h", "rtt": 10**400}, b"")
def test_protocol_decode(message: dict[str, Any], framing: bytes) -> None:
    """decode: a checked message or a documented DecodeError, for any field values."""
    targets.protocol(_dumps(message, framing))


@PROPERTY
@given(messages(), _framing, st.dictionaries(_fields, _values, min_size=1, max_size=3))
@example({"ID": "HTB", "name": "h", "version": "1"}, b"", {"version": "\ud800"})
def test_protocol_decode_duplicate_keys(message: dict[str, Any], framing: bytes,
                                        shadowed: dict[str, Any]) -> None:
    """Keys said twice: the last value wins, and a shadowed one never passes the policy by
    hiding in the text passed on."""
    decoded = targets.protocol(_dumps(message, framing, shadowed))
    if decoded is not None:
        assert decoded == {**shadowed, **message} | {
            k: v for k, v in decoded.items() if k in {"output", "truncated"}}


@PROPERTY
@given(messages(), _framing)
def test_protocol_decode_reply(message: dict[str, Any], framing: bytes) -> None:
    """decode_reply (the agent's side): ACK/CMD/UPD or a documented DecodeError; any other
    ID is refused."""
    decoded = targets.reply(_dumps(message, framing))
    if message.get("ID") not in ("ACK", "CMD", "UPD"):
        assert decoded is None


@PROPERTY
@given(st.binary(max_size=600))
def test_protocol_decode_bytes(data: bytes) -> None:
    """Arbitrary bytes, raw, zlib'd, signed or as an envelope, refused only with DecodeError;
    signing never changes the verdict, and a forged envelope is never taken."""
    assert (targets.protocol(b"S" + data) is None) == (targets.protocol(data) is None)
    assert (targets.protocol(b"SZ" + data) is None) == (targets.protocol(b"Z" + data) is None)
    assert targets.protocol(b"HBS1" + data) is None
    targets.reply(data)


@pytest.mark.parametrize("payload", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"ID":"HTB","name":"h","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    zlib.compress(b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    b'{"ID":"HTB","name":"h","n":' + b"9" * 100_000 + b"}",
])
def test_protocol_decode_pathological(payload: bytes) -> None:
    """Deep nesting and huge numbers are refused with a DecodeError, never a crash."""
    with pytest.raises(DecodeError) as info:
        decode(payload)
    assert info.value.reason in targets.DECODE_REASONS


_server_keys = st.sampled_from([*sorted(ServerConfig.__dataclass_fields__), "hb_prot", "x"])
_agent_keys = st.sampled_from([*sorted(AgentConfig.__dataclass_fields__), "intervall"])


@PROPERTY
@given(st.dictionaries(_server_keys, _values, max_size=6))
@example({"interval": float("inf")})
@example({"grace": float("nan")})
@example({"hosts": {"web1": {"interval": float("inf")}}})
@example({"hosts": {"bad name": {}}})
def test_server_config(data: dict[str, Any]) -> None:
    """parse_config(ServerConfig): a config or a one-line ConfigError, for any values; an
    unknown key is always refused."""
    parsed = targets.config(yaml.safe_dump(data).encode())
    if set(data) - set(ServerConfig.__dataclass_fields__):
        assert parsed is None


@PROPERTY
@given(st.dictionaries(_agent_keys, _values, max_size=6))
def test_agent_config(data: dict[str, Any]) -> None:
    """parse_config(AgentConfig): a config or a one-line ConfigError, for any values; an
    unknown key is always refused."""
    parsed = targets.config(b"A" + yaml.safe_dump(data).encode())
    if set(data) - set(AgentConfig.__dataclass_fields__):
        assert parsed is None


@PROPERTY
@given(st.text(max_size=300))
def test_config_text(text: str) -> None:
    """Arbitrary text as a config file: a config or a one-line ConfigError; a config only
    when the text is a mapping (or empty)."""
    parsed = targets.config(text.encode())
    if parsed is not None:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError:
            document = "not YAML"
        assert document is None or isinstance(document, dict)


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,
    "hosts: " + "{a: " * 3000 + "1" + "}" * 3000,
    "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nhb_port: [*c, *c, *c, *c, *c, *c]\n",
    "interval: .inf",
    "grace: .nan",
    "hosts: {web1: {interval: .inf}}",
])
def test_config_pathological(text: str) -> None:
    """Deep nesting, alias bombs and non-finite numbers are a one-line ConfigError."""
    with pytest.raises(ConfigError) as info:
        parse_config(ServerConfig, text, "hostile.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("hostile.yaml")


@st.composite
def plugin_outputs(draw: Any) -> str:
    """Monitoring Plugins output: status text, then perfdata items good and bad."""
    labels = st.text(alphabet="ab '=;|/_ \n", min_size=0, max_size=6)
    numbers = st.sampled_from(["1", "-2.5", "1e3", "1e999", "U", "", "~", "@", "x", "nan",
                               "inf", "10:", "~:5", "@1:2", "5:1", "1,5"])
    items = st.lists(st.tuples(labels, numbers, st.sampled_from(["", "%", "ms", "B", "c"]),
                               st.lists(numbers, max_size=5)), max_size=5)
    text = draw(st.text(max_size=30))
    perf = " ".join(f"{label}={value}{uom};{';'.join(rest)}"
                    for label, value, uom, rest in draw(items))
    return f"{text}|{perf}\n{draw(st.text(max_size=20))}|{perf}"


@PROPERTY
@given(plugin_outputs() | st.text(max_size=200))
@example("OK|'a''=1 '=2 ''=3 a=1e999;1e999:;~:~;;")
def test_nagios_output(text: str) -> None:
    """parse_output never raises; parse_range raises only ValueError."""
    targets.perfdata(text.encode())


def test_nan_never_leaves_decode() -> None:
    """The strict-JSON invariant the targets check really catches NaN (the check can fail)."""
    with pytest.raises(ValueError):
        targets._strict_json({"x": math.nan})


@pytest.mark.parametrize("value", [{"x": "\ud800"}, {"\udfff": 1}, {"p": {"a\x00": 1}}])
def test_bad_text_never_leaves_decode(value: dict[str, Any]) -> None:
    """The targets' invariant really catches what the text policy refuses (it can fail)."""
    with pytest.raises((UnicodeEncodeError, targets.Escape)):
        targets._strict_json(value)


@st.composite
def display_templates(draw: Any) -> bytes:
    """A display template with fields, specs and conversions, then the fields as JSON."""
    names = st.sampled_from(["value", "host", "limit", "check_name", "output", "x", "a.b",
                             "a[0]", "", " "])
    specs = st.sampled_from(["", ".1f", ">20", ",", "%", "d", "x", "{value}", "^999",
                             "0>1000", ".1000f", "n", "=+08.2f", "s"])
    conversions = st.sampled_from(["", "!r", "!s", "!a", "!x"])
    parts = draw(st.lists(st.tuples(st.text(alphabet="ab {}:", max_size=4), names,
                                    conversions, specs), max_size=5))
    text = "".join(f"{lit}{{{name}{conv}{':' + spec if spec else ''}}}"
                   for lit, name, conv, spec in parts)
    fields = draw(st.dictionaries(names, _values, max_size=5))
    return text.encode() + b"\0" + json.dumps(fields).encode()


@PROPERTY
@given(display_templates() | st.binary(max_size=200))
@example(b"{value:>100000000}\0{\"value\": 1}")
@example(b"{value:.100000f}\0{\"value\": 1.5}")
@example(b"{value:,}{value!a}\0{\"value\": 1e999}")
def test_threshold_templates(data: bytes) -> None:
    """parse_template refuses only with ValueError; render_template never raises, stays small."""
    targets.thresholds(data)
