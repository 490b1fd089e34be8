"""The wire protocol: decoding, limits and encoding (docs/PROTOCOL.md)."""

from __future__ import annotations

import contextlib
import json
import zlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from heartbeat import protocol
from heartbeat.protocol import (
    COMPRESS_ABOVE,
    DEFAULT_LIMITS,
    DecodeError,
    Limits,
    decode,
    decode_with_text,
    encode,
    valid_host_name,
)
from heartbeat.text import may_break_policy


def _reason(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(DecodeError) as info:
        decode(payload, limits)
    return info.value.reason


class DecodeTests:
    def test_text_heartbeat(self) -> None:
        """A text HTB decodes to the same dict, unknown fields kept."""
        message = {"ID": "HTB", "name": "webserver1", "interval": 30, "seq": 17,
                   "ts": 1711234567.1, "rtt": 0.42, "custom": [1, 2]}
        assert decode(json.dumps(message).encode()) == message

    def test_zlib_datagram(self) -> None:
        """A zlib-compressed PLG decodes and returns its inflated text."""
        message = {"ID": "PLG", "name": "h", "plugins": {"cpu_monitor": {"cpu_percent": 1.5}}}
        text = json.dumps(message).encode()
        assert decode_with_text(zlib.compress(text)) == (message, text)

    @pytest.mark.parametrize("level", [0, 1, 9])
    def test_any_zlib_level(self, level: int) -> None:
        """Every zlib compression level has a valid header the server recognises."""
        message = {"ID": "HTB", "name": "h"}
        assert decode(zlib.compress(json.dumps(message).encode(), level)) == message

    def test_decompression_bomb_is_stopped_while_inflating(self) -> None:
        """A small datagram inflating past max_inflated is refused without inflating it all."""
        bomb = zlib.compress(b'{"ID":"HTB","name":"h","pad":"' + b"a" * 50_000_000 + b'"}')
        assert len(bomb) < 65535
        assert _reason(bomb) == "too_large"

    def test_inflated_size_limit_is_configurable(self) -> None:
        """max_inflated applies to text and zlib payloads alike."""
        text = json.dumps({"ID": "HTB", "name": "h", "pad": "x" * 200}).encode()
        assert _reason(text, Limits(max_inflated=100)) == "too_large"
        assert _reason(zlib.compress(text), Limits(max_inflated=100)) == "too_large"
        assert decode(text, Limits(max_inflated=len(text)))["name"] == "h"

    def test_nesting_depth_limit(self) -> None:
        """Nesting deeper than max_depth is refused; exactly max_depth is fine."""
        def nested(depth: int) -> bytes:
            inner: object = 1  # the message object is level 1, plugins level 2, ...
            for _ in range(depth - 1):
                inner = {"k": inner}
            return json.dumps({"ID": "PLG", "name": "h", "plugins": inner}).encode()
        assert decode(nested(16), Limits(max_depth=16))["ID"] == "PLG"
        assert _reason(nested(17), Limits(max_depth=16)) == "too_deep"
        assert _reason(nested(5), Limits(max_depth=4)) == "too_deep"

    def test_pathological_nesting_does_not_crash(self) -> None:
        """A list nested far past Python's recursion limit is a DecodeError, not a crash."""
        payload = b'{"ID":"HTB","name":"h","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        assert _reason(zlib.compress(payload)) == "too_deep"

    @pytest.mark.parametrize(("payload", "reason"), [
        (b"", "empty"),
        (b"garbage", "bad_format"),
        (b"\x78\x9c\x00\x01broken", "zlib"),
        (zlib.compress(b'{"ID":"HTB","name":"h"}')[:-3], "zlib"),
        (b"{not json", "json"),
        (b'{"ID":"HTB","name":"h"} trailing', "json"),
        (b'{"ID":"HTB","name":"\xff\xfe"}', "json"),
        (b'{"ID":"HTB","name":"h","interval":NaN}', "json"),
        (b'{"ID":"HTB","name":"h","interval":1e400}', "json"),
        (b'{"ID":"HTB"}', "missing_name"),
        (b'{"name":"h"}', "missing_id"),
        (b'{"ID":"","name":"h"}', "missing_id"),
        (b'{"ID":"HTB","name":""}', "bad_name"),
        (b'{"ID":"HTB","name":"a b"}', "bad_name"),
        (b'{"ID":"HTB","name":"' + b"a" * 254 + b'"}', "bad_name"),
        (b'{"ID":"HTB","name":5}', "bad_name"),
        (b'{"ID":"HTB","name":"h","seq":"1"}', "bad_field"),
        (b'{"ID":"HTB","name":"h","seq":true}', "bad_field"),
        (b'{"ID":"HTB","name":"h","ts":"now"}', "bad_field"),
        (b'{"ID":"HTB","name":"h","interval":0}', "bad_field"),
        (b'{"ID":"HTB","name":"h","rtt":-1}', "bad_field"),
        (b'{"ID":"MSG","name":"h"}', "bad_field"),
        (b'{"ID":"MSG","name":"h","text":"x","level":"panic"}', "bad_field"),
        (b'{"ID":"PLG","name":"h","plugins":[]}', "bad_field"),
        (b'{"ID":"RES","name":"h","rc":0}', "bad_field"),
        (b'{"ID":"RES","name":"h","cmd_id":"c","rc":"0"}', "bad_field"),
    ])
    def test_bad_datagrams_name_their_reason(self, payload: bytes, reason: str) -> None:
        """Each way of breaking the protocol raises DecodeError with its counter name."""
        assert _reason(payload) == reason

    @pytest.mark.parametrize(("payload", "detail"), [
        (rb'{"ID":"HTB","name":"x","interval":30,"version":"\ud800"}',
         "a lone surrogate in version"),
        (rb'{"ID":"HTB","name":"x","\uDC00":1}', "a lone surrogate in the key \\udc00"),
        (rb'{"ID":"MSG","name":"x","text":"ok \udfff"}', "a lone surrogate in text"),
        (rb'{"ID":"PLG","name":"x","plugins":{"cpu\ud83d":{"v":1}}}',
         "a lone surrogate in the key plugins.cpu\\ud83d"),
        (rb'{"ID":"PLG","name":"x","plugins":{"cpu":{"a":[1,{"b":["\ude00"]}]}}}',
         "a lone surrogate in plugins.cpu.a[1].b[0]"),
        (rb'{"ID":"PLG","name":"x","plugins":{"cpu\u0000":{"v":1}}}',
         "a NUL in the key plugins.cpu\\x00"),
        (rb'{"ID":"PLG","name":"x","plugins":{"cpu":{"load\u0000":1}}}',
         "a NUL in the key plugins.cpu.load\\x00"),
        (rb'{"ID":"HTB","name":"x","\u0000":1}', "a NUL in the key \\x00"),
        (rb'{"ID":"RES","name":"x","cmd_id":"c","rc":0,"output":"\ud800"}',
         "a lone surrogate in output"),
        (rb'{"ID":"RES","name":"x","cmd_id":"\ud800","rc":0}', "a lone surrogate in cmd_id"),
    ])
    def test_text_that_cannot_be_stored_is_bad_text(self, payload: bytes, detail: str) -> None:
        """Lone surrogates anywhere and NUL in any key are refused as bad_text, text or zlib,
        and the detail names where."""
        for framing in (payload, zlib.compress(payload)):
            with pytest.raises(DecodeError) as info:
                decode(framing)
            assert (info.value.reason, info.value.detail) == ("bad_text", detail)

    def test_long_res_output_with_a_surrogate_is_a_decode_error(self) -> None:
        """A RES output over 4,096 characters holding a lone surrogate is bad_text, not the
        UnicodeEncodeError its truncation used to raise."""
        payload = (b'{"ID":"RES","name":"x","cmd_id":"c","rc":0,"output":"'
                   + b"x" * 5000 + rb'\ud800"}')
        assert _reason(zlib.compress(payload)) == "bad_text"

    def test_a_shadowed_surrogate_never_leaves_in_the_text(self) -> None:
        """A key said twice keeps its last value; when an earlier one held a lone surrogate,
        the text passed on is re-encoded from the message, so no reader ever meets it."""
        raw = rb'{"ID":"HTB","name":"d","version":"\ud800","version":"1.0"}'
        assert decode_with_text(raw) == ({"ID": "HTB", "name": "d", "version": "1.0"},
                                         b'{"ID":"HTB","name":"d","version":"1.0"}')
        plain = b'{"ID":"HTB","name":"a","name":"b"}'
        assert decode_with_text(plain) == ({"ID": "HTB", "name": "b"}, plain)

    @pytest.mark.parametrize("payload", [
        rb'{"ID":"MSG","name":"x","text":"smile \ud83d\ude00"}',  # a pair is one character
        rb'{"ID":"MSG","name":"x","text":"nul \u0000 in a value"}',
        rb'{"ID":"MSG","name":"x","text":"\\ud800 is an escaped backslash"}',
        rb'{"ID":"PLG","name":"x","plugins":{"\ud55c\uad6d":{"v":"\uD7FF\uE000"}}}',
    ])
    def test_text_that_can_be_stored_passes(self, payload: bytes) -> None:
        """Surrogate pairs, NUL in values, escaped backslashes and text next to the surrogate
        block decode as they are."""
        assert decode(payload) == json.loads(payload)

    @pytest.mark.parametrize("payload", [
        b'{"ID":"HTB","name":"h","rtt":' + b"9" * 400 + b"}",
        b'{"ID":"BOOT","name":"h","boot_time":-' + b"9" * 400 + b"}",
        b'{"ID":"HTB","name":"h","ts":' + b"9" * 310 + b"}",
    ])
    def test_numbers_no_float_can_hold_are_bad_fields(self, payload: bytes) -> None:
        """An integer past the float range in a numeric field is refused: the registry turns
        rtt and boot_time into floats, which would raise OverflowError."""
        assert _reason(payload) == "bad_field"

    def test_top_level_must_be_object(self) -> None:
        """A JSON array in a zlib datagram is not a message."""
        assert _reason(zlib.compress(b"[1, 2]")) == "not_object"

    def test_unknown_id_passes(self) -> None:
        """Unknown IDs decode (the server journals and counts them)."""
        assert decode(b'{"ID":"XYZ","name":"h"}') == {"ID": "XYZ", "name": "h"}

    def test_long_res_output_is_truncated_not_dropped(self) -> None:
        """A RES output past 4 KiB is cut to 4 KiB and marked, so nothing else is lost."""
        message, text = decode_with_text(encode(
            {"ID": "RES", "name": "h", "cmd_id": "c1", "rc": 0, "output": "x" * 5000}))
        assert message == {"ID": "RES", "name": "h", "cmd_id": "c1", "rc": 0,
                           "output": "x" * 4096, "truncated": True}
        assert json.loads(text) == message

    @pytest.mark.parametrize("name", ["a", "web-1.example.com", "A_b.9", "x" * 253])
    def test_valid_names(self, name: str) -> None:
        """Names of 1-253 characters of [A-Za-z0-9._-] are valid."""
        assert valid_host_name(name)


class EncodeTests:
    def test_small_messages_stay_text(self) -> None:
        """Messages up to 512 bytes of JSON go as text."""
        data = encode({"ID": "ACK", "seq": 1, "ts": 2.5, "server_ts": 3.0})
        assert data == b'{"ID":"ACK","seq":1,"ts":2.5,"server_ts":3.0}'

    def test_large_messages_are_compressed(self) -> None:
        """Messages over 512 bytes of JSON are zlib streams that decode back."""
        message = {"ID": "PLG", "name": "h", "plugins": {"p": {"v": "x" * COMPRESS_ABOVE}}}
        data = encode(message)
        assert data[:1] != b"{"
        assert decode(data) == message


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_decode_never_raises_other_errors(payload: bytes) -> None:
    """Arbitrary bytes either decode or raise DecodeError, nothing else."""
    with contextlib.suppress(DecodeError):
        decode(payload)


def _keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    return [k for v in value for k in _keys(v)] if isinstance(value, list) else []


@given(st.dictionaries(st.text(max_size=10), _json, max_size=5), st.booleans())
def test_plugin_messages_round_trip(plugins: dict[str, object], compress: bool) -> None:
    """Any JSON plugin data survives encode/decode, text or compressed; a NUL in a key is
    the one text it refuses (strings here hold no lone surrogates)."""
    message = {"ID": "PLG", "name": "h", "plugins": plugins}
    data = encode(message, compress_above=0 if compress else 10**9)
    try:
        assert decode(data) == message
    except DecodeError as e:
        assert e.reason == "too_deep" or (
            e.reason == "bad_text" and any("\0" in k for k in _keys(plugins)))


# orjson reads datagrams (heartbeat.protocol.read_json); the standard library's reader with
# the contract's checks (protocol._JSON, what read every datagram before) is the reference.
def _reading(read: object, text: bytes) -> str:
    """What ``read`` makes of ``text``: the value with its types (repr tells 1 from 1.0 and
    -0.0 from 0.0, and keeps key order), or that it refused it, and why."""
    try:
        return repr(read(text))  # type: ignore[operator]
    except RecursionError:
        return "too_deep"
    except ValueError:  # UnicodeDecodeError and the JSON errors
        return "refused"


def _old(text: bytes) -> object:
    return protocol._JSON.decode(text.decode("utf-8"))


_odd_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-2**80, 2**80) | st.floats()
    | st.text(st.characters(exclude_categories=())
              | st.sampled_from(["\ud800", "\udfff", "\x00", "\\", '"']), max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12)
_number = (st.from_regex(rb"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?",
                         fullmatch=True)
           | st.builds(lambda bound, off, sign: b"%d" % (sign * (bound + off)),
                       st.sampled_from([2**63, 2**64, 10**19, 10**24]), st.integers(-99, 99),
                       st.sampled_from([1, -1])))
"""Any JSON number; and integers close to the 64-bit bounds, either side."""


@given(_odd_json, st.booleans(), st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=2)),
                                          max_size=2))
def test_orjson_reads_as_the_standard_library_did(value: object, ascii_only: bool,
                                                  edits: list[tuple[int, bytes]]) -> None:
    """Any JSON text, with huge integers, NaN, lone surrogates, NUL and broken bytes spliced
    in, reads to the same typed value as before, or is refused as before."""
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    for at, splice in edits:
        text = text[:at] + splice + text[at:]
    assert _reading(protocol.read_json, text) == _reading(_old, text)


@given(st.lists(_number, min_size=1, max_size=4))
def test_numbers_read_as_the_standard_library_did(numbers: list[bytes]) -> None:
    """Every JSON number, however many digits, reads to the same int or float as before
    (and one that overflows to an infinity is refused as before)."""
    text = b"[" + b",".join(numbers) + b"]"
    assert _reading(protocol.read_json, text) == _reading(_old, text)


@pytest.mark.parametrize("number", [
    2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63, -2**63 - 1, 10**18, 10**19, -10**19, 10**40])
def test_integers_past_64_bits_stay_integers(number: int) -> None:
    """An integer on either side of the 64-bit bounds reads as that integer (orjson would
    read one past them as a float) and passes on as it came."""
    raw = b'{"ID":"HTB","name":"h","seq":%d,"big":[%d]}' % (number, number)
    assert decode_with_text(raw) == ({"ID": "HTB", "name": "h", "seq": number,
                                      "big": [number]}, raw)


def test_depth_past_what_orjson_reads_is_too_deep() -> None:
    """orjson stops at 1,024 levels; deeper is too_deep, as it was, and so is 1,024."""
    for depth in (1023, 1024, 1025, 5000):
        payload = b'{"ID":"HTB","name":"h","x":' + b"[" * depth + b"]" * depth + b"}"
        assert _reason(payload) == "too_deep"


_nested = st.recursive(
    st.none() | st.integers() | st.text(st.sampled_from('ab{}[]"\\:,'), max_size=4),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(st.sampled_from('k{]"\\'), max_size=3), children, max_size=3),
    max_leaves=30)


@given(st.dictionaries(st.text(max_size=2), _nested, max_size=3), st.integers(1, 12),
       st.booleans())
@example({"a": '"{"'}, 1, False)  # escaped quotes around a bracket: still a string
def test_depth_read_from_the_text_is_the_walks(value: object, limit: int, spaced: bool) -> None:
    """The nesting bound read from the JSON text (brackets, strings holding brackets, quotes
    and backslashes) answers as the walk of the decoded value does, at and around the limit."""
    text = json.dumps(value, separators=(", ", ": ") if spaced else (",", ":")).encode()
    assert protocol._nests_deeper(text, value, limit) == protocol._depth_exceeds(value, limit)
    shape = protocol._shape(text)  # decode_received's way: one pass, shared with the policy
    assert protocol._nests_deeper(text, value, limit, shape) == protocol._depth_exceeds(
        value, limit)
    assert (b"\\" in shape and may_break_policy(text)) == may_break_policy(text)


def _validated_as_before(message: dict[str, object]) -> dict[str, object]:
    """protocol._validate as it was before its checks were written out (issue 16)."""
    check = protocol._check_optional
    kind = message.get("ID")
    if not isinstance(kind, str) or not kind:
        raise DecodeError("missing_id")
    if "name" not in message:
        raise DecodeError("missing_name")
    if not valid_host_name(message["name"]):
        raise DecodeError("bad_name", f"{message['name']!r:.60}")
    check(message, "seq", isinstance(message.get("seq"), int)
          and not isinstance(message.get("seq"), bool))
    check(message, "ts", protocol._number(message.get("ts")))
    check(message, "version", isinstance(message.get("version"), str))
    if kind == "HTB":
        interval = message.get("interval")
        if interval is not None and not (protocol._number(interval)
                                         and 0 < interval <= 86400 * 7):  # type: ignore[operator]
            raise DecodeError("bad_field", f"interval: {interval!r:.40}")
        check(message, "rtt", protocol._number(message.get("rtt"))
              and message["rtt"] >= 0)  # type: ignore[operator]
        return message
    return protocol._validate(message)  # the kinds' own checks were not changed


_field_value = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False) | st.sampled_from([0, 1, 30, 86400 * 7, 1e308])
                | st.text(max_size=3) | st.lists(st.integers(), max_size=1))


@given(st.sampled_from(["HTB", "BOOT", "PLG", "MSG", "XYZ", "", None, 1]),
       st.sampled_from(["h", "web-1.example", "", "a b", None, 7, "x" * 254]),
       st.dictionaries(st.sampled_from(["seq", "ts", "version", "interval", "rtt"]),
                       _field_value, max_size=5))
def test_validate_checks_as_before(kind: object, name: object,
                                   fields: dict[str, object]) -> None:
    """The checks every datagram goes through, written out for speed, accept and refuse
    (reason and detail) exactly as the generic checks they replace."""
    message: dict[str, object] = {**fields}
    if kind is not None:
        message["ID"] = kind
    if name is not None:
        message["name"] = name
    if kind == "PLG":
        message["plugins"] = {}
    if kind == "MSG":
        message["text"] = "t"

    def outcome(validate: object) -> object:
        try:
            return validate(dict(message))  # type: ignore[operator]
        except DecodeError as e:
            return (e.reason, e.detail)

    assert outcome(protocol._validate) == outcome(_validated_as_before)


def test_the_zlib_stream_a_text_came_in_is_kept_when_it_is_exactly_that_text() -> None:
    """decode_received returns the stream as it came (the store keeps it, not compressing
    again) only when it inflates to the text passed on and nothing follows its end."""
    text = b'{"ID":"PLG","name":"h","plugins":{"cpu":{"v":1}}}'
    stream = zlib.compress(text, 9)
    assert protocol.decode_received(stream) == (json.loads(text), text, stream)
    assert protocol.decode_received(text)[2] is None
    assert protocol.decode_received(stream + b"after")[1:] == (text, None)
    small_window = zlib.compressobj(6, zlib.DEFLATED, 9)
    other = small_window.compress(text) + small_window.flush()  # header byte 0x18, not "x"
    assert protocol.decode_received(other)[1:] == (text, None)
    res = b'{"ID":"RES","name":"h","cmd_id":"c","rc":0,"output":"' + b"x" * 5000 + b'"}'
    message, passed_on, packed = protocol.decode_received(zlib.compress(res))
    assert (message["truncated"], packed) == (True, None)
    assert passed_on == encode(message, compress_above=10**9)
