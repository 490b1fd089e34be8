"""The one text policy and the one JSON encoder (heartbeat.text, docs/PROTOCOL.md "Text")."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat.text import json_bytes, may_break_policy, text_problem

SRC = Path(__file__).resolve().parent.parent / "src" / "heartbeat"

_characters = (st.characters(exclude_categories=())
               | st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\\"]))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(_characters, max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(_characters, max_size=6), children, max_size=3),
    max_leaves=12)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} in the output")


def _strict(data: bytes) -> Any:
    """Parse as a strict reader does: UTF-8 only, no NaN/Infinity."""
    return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)


class EncoderTests:
    def test_compact_utf8(self) -> None:
        """Compact separators, non-ASCII written as UTF-8, not escaped."""
        assert json_bytes({"a": [1, 2.5, None, True], "ü": "日本"}) == \
            '{"a":[1,2.5,null,true],"ü":"日本"}'.encode()

    def test_lone_surrogates_become_replacement_characters(self) -> None:
        """A lone surrogate anywhere, key or value, is written as U+FFFD; pairs stay."""
        value = {"\udc80k": ["\ud800", {"x": "a\udfffb"}], "pair": "\U0001f600"}
        assert _strict(json_bytes(value)) == {
            "\ufffdk": ["\ufffd", {"x": "a\ufffdb"}], "pair": "\U0001f600"}

    def test_non_finite_floats_become_null(self) -> None:
        """NaN and the infinities, which strict JSON cannot say, are written as null."""
        assert json_bytes([math.nan, math.inf, -math.inf, 1.5, (2, math.nan)]) == \
            b"[null,null,null,1.5,[2,null]]"

    def test_what_json_cannot_express_is_a_caller_bug(self) -> None:
        """A set is no JSON value: that raises (a bug in the caller, never in the input)."""
        with pytest.raises(TypeError):
            json_bytes({"s": {1}})

    def test_what_orjson_refuses_is_written_as_before(self) -> None:
        """Integers past 64 bits, keys that are not strings and nesting past orjson's 254
        levels are written by the standard library, as they were before orjson."""
        deep: Any = 1
        for _ in range(300):
            deep = [deep]
        value = {"big": [2**64, -2**63 - 1], 1: "a", None: 2, False: 3, 2.5: 4, "deep": deep}
        assert json_bytes(value) == json.dumps(
            value, ensure_ascii=False, separators=(",", ":")).encode()

    def test_dataclasses_and_datetimes_are_caller_bugs(self) -> None:
        """orjson would write a dataclass or a datetime; here they raise as with json."""
        for value in (dataclasses.make_dataclass("D", ["x"])(1), datetime.datetime.now()):
            with pytest.raises(TypeError):
                json_bytes({"v": value})

    @settings(max_examples=300, deadline=None)
    @given(_json)
    def test_reads_back_as_the_standard_library_wrote(self, value: Any) -> None:
        """Whatever orjson writes reads back to what the standard library's text of the
        same value reads back to (the floats' spelling may differ: 2.5e-7, not 2.5e-07)."""
        before = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if text_problem(value) is None and "nan" not in repr(value) and "inf" not in repr(value):
            assert repr(_strict(json_bytes(value))) == repr(json.loads(before))

    @settings(max_examples=300, deadline=None)
    @given(_json)
    def test_never_raises_and_always_strict(self, value: Any) -> None:
        """Any JSON-shaped value, with lone surrogates, NUL, NaN and huge integers, encodes to
        strict UTF-8 JSON equal to the value wherever the value needed no repair."""
        data = json_bytes(value)
        parsed = _strict(data)
        if text_problem(value) is None and "nan" not in repr(value) and "inf" not in repr(value):
            assert parsed == value


def _upper_escapes(raw: bytes, draw: Any) -> bytes:
    """The escapes of ``raw`` in upper case where ``draw`` says so (senders may write
    ``\\uD800``; Python writes ``\\ud800``)."""
    return re.sub(rb"\\u[0-9a-f]{4}",
                  lambda m: m.group(0)[:2] + m.group(0)[2:].upper() if draw() else m.group(0),
                  raw)


class PolicyTests:
    @settings(max_examples=500, deadline=None)
    @given(_json, st.randoms(use_true_random=False))
    def test_the_byte_scan_never_misses(self, value: Any, random: Any) -> None:
        """Whatever text the policy refuses, the scan of the raw bytes flags it, in any
        case of the hex digits: the walk it saves is never skipped when it matters."""
        raw = _upper_escapes(json.dumps(value).encode(), lambda: random.random() < 0.5)
        if text_problem(json.loads(raw)) is not None:
            assert may_break_policy(raw)

    @pytest.mark.parametrize("raw", [
        b'{"ID":"HTB","name":"h","seq":1}',
        '{"ID":"MSG","name":"h","text":"grüße \\n \\"quoted\\" 日本"}'.encode(),
    ])
    def test_plain_text_needs_no_walk(self, raw: bytes) -> None:
        """What senders write (no \\u escape at all, or only other escapes) is cleared by
        the scan alone."""
        assert not may_break_policy(raw)

    @pytest.mark.parametrize(("value", "problem"), [
        ({"a": "ok", "b": ["x", {"c": "\ud800"}]}, "a lone surrogate in b[1].c"),
        ({"a\x00b": 1}, "a NUL in the key a\\x00b"),
        ({"p": {"\udfff": 1}}, "a lone surrogate in the key p.\\udfff"),
        ("\udc80", "a lone surrogate in the value"),
        ({"k" * 100: {"v": "\ud800"}}, "a lone surrogate in " + "k" * 77 + "..."),
        ({"a": "\x00", "b": "\U0001f600", "c": [None, 1, 2.5]}, None),
    ])
    def test_problems_name_the_place(self, value: Any, problem: str | None) -> None:
        """The answer names where the bad text sits, keys escaped, at most 80 characters."""
        assert text_problem(value) == problem


def test_one_json_encoder() -> None:
    """No module of the server or agent writes JSON but through heartbeat.text."""
    writers = re.compile(r"json\.dumps?\(|JSONEncoder\(|\bdumps\(")
    found = [f"{path.relative_to(SRC)}:{n}" for path in sorted(SRC.rglob("*.py"))
             if path != SRC / "text.py"
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if writers.search(line)]
    assert found == []
