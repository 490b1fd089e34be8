"""Odd datagrams: text no UTF-8 can carry, NUL, numbers past a float, nesting, repeated keys,
bombs and garbage, each with the drop reason it earns (None: accepted).

The process test sends them all to the real twistd (tests/test_odd_datagrams_process.py);
the whole-server fuzz target starts from them (fuzz/server.py). One list, so a datagram
found to hurt the server is added once and checked everywhere.
"""

from __future__ import annotations

import json
import zlib
from typing import Final

__all__ = ["ACCEPTED_HOSTS", "ODD_DATAGRAMS"]


def _nested(depth: int) -> bytes:
    """A PLG whose plugin data nests to ``depth`` levels (the message object is level 1)."""
    inner: object = 1
    for _ in range(depth - 1):
        inner = {"k": inner}
    return json.dumps({"ID": "PLG", "name": "deep", "plugins": inner}).encode()


ODD_DATAGRAMS: Final[list[tuple[str, bytes, str | None]]] = [
    ("issue 12: a lone surrogate in version",
     rb'{"ID":"HTB","name":"x","interval":30,"version":"\ud800"}', "bad_text"),
    ("a lone surrogate in a key", rb'{"ID":"HTB","name":"k1","\uDC00":1}', "bad_text"),
    ("a lone surrogate in MSG text", rb'{"ID":"MSG","name":"m1","text":"a\udfffb"}', "bad_text"),
    ("a RES output over 4 KiB holding a lone surrogate",
     zlib.compress(b'{"ID":"RES","name":"r1","cmd_id":"c","rc":0,"output":"' + b"x" * 5000
                   + rb'\ud800"}'), "bad_text"),
    ("a lone surrogate in a plugin name",
     rb'{"ID":"PLG","name":"p1","plugins":{"cpu\ud83d":{"v":1}}}', "bad_text"),
    ("a lone surrogate deep in plugin data",
     rb'{"ID":"PLG","name":"p1","plugins":{"disk":{"mounts":[{"path":"/mnt/\udcff"}]}}}',
     "bad_text"),
    ("a NUL in a plugin name", rb'{"ID":"PLG","name":"p2","plugins":{"cpu\u0000":{"v":1}}}',
     "bad_text"),
    ("a NUL in a metric key", rb'{"ID":"PLG","name":"p2","plugins":{"cpu":{"lo\u0000ad":1}}}',
     "bad_text"),
    ("a NUL in a field name", rb'{"ID":"HTB","name":"n1","\u0000":1}', "bad_text"),
    ("a lone surrogate in an unknown ID", rb'{"ID":"\ud800","name":"u0"}', "bad_text"),
    ("a float past the double range", b'{"ID":"HTB","name":"f1","interval":1e400}', "json"),
    ("NaN", b'{"ID":"PLG","name":"f1","plugins":{"p":{"v":NaN}}}', "json"),
    ("an integer rtt no float can hold",
     b'{"ID":"HTB","name":"f2","rtt":' + b"9" * 400 + b"}", "bad_field"),
    ("an integer boot_time no float can hold",
     b'{"ID":"BOOT","name":"f2","boot_time":-' + b"9" * 400 + b"}", "bad_field"),
    ("an integer of 5,000 digits", b'{"ID":"HTB","name":"f3","n":' + b"7" * 5000 + b"}",
     "json"),
    ("nesting one past the limit", _nested(17), "too_deep"),
    ("nesting past the recursion limit",
     zlib.compress(b'{"ID":"HTB","name":"d1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
     "too_deep"),
    ("a zlib bomb", zlib.compress(b'{"ID":"HTB","name":"b1","pad":"' + b"a" * 20_000_000
                                  + b'"}', 9), "too_large"),
    ("a truncated zlib stream", zlib.compress(b'{"ID":"HTB","name":"z1"}')[:-3], "zlib"),
    ("garbage", b"\x00\xff garbage \xfe", "bad_format"),
    ("an empty datagram", b"", "empty"),
    ("text that is not UTF-8", b'{"ID":"HTB","name":"h","version":"\xed\xa0\x80"}', "json"),
    ("trailing garbage", b'{"ID":"HTB","name":"t1"} {}', "json"),
    ("a top-level array", zlib.compress(b'[{"ID":"HTB","name":"a1"}]'), "not_object"),
    ("a signed envelope and no keys", b"HBS1\x05fleet" + b"\x00" * 40 + b"{}", "unknown_key"),
    ("a bad host name", b'{"ID":"HTB","name":"a\\u0000b"}', "bad_name"),
    # Accepted, however odd: each must be stored, journaled, listed and fed like any other.
    ("a repeated key shadowing a lone surrogate",
     rb'{"ID":"HTB","name":"shadow","interval":30,"version":"\ud800","version":"1.0"}', None),
    ("a repeated name (the last wins)", b'{"ID":"HTB","name":"evil","name":"dupname"}', None),
    ("NUL and a surrogate pair in a value",
     rb'{"ID":"HTB","name":"nulver","interval":30,"version":"1\u0000x \ud83d\ude00"}', None),
    ("odd but storable plugin data", json.dumps({"ID": "PLG", "name": "oddplg", "plugins": {
        "a,b": {"v": 10**300, "neg": -(2**70), "tiny": 5e-324, "nul": "x\x00y"},
        "\U0001f600": {"ok": True, "__proto__": {"x": None}},
        "n" * 1000: [1.7976931348623157e308, -0.0, ""]}}).encode(), None),
    ("nesting exactly at the limit", _nested(16), None),
    ("a RES output over 4 KiB (truncated, not dropped)",
     zlib.compress(json.dumps({"ID": "RES", "name": "res1", "cmd_id": 7, "rc": 0,
                               "output": "\u00fc" * 5000}).encode()), None),
    ("a MSG with NUL and emoji", rb'{"ID":"MSG","name":"msg1","text":"a\u0000\ud83d\ude00"}',
     None),
    ("an unknown ID", rb'{"ID":"\ud83d\ude00","name":"u1"}', None),
]
"""(what it is, the datagram, the drop reason it earns or None when it is accepted)."""

ACCEPTED_HOSTS: Final = frozenset(
    {"shadow", "dupname", "nulver", "oddplg", "deep", "res1", "msg1"})
"""The hosts the accepted datagrams create (an unknown ID creates none)."""
