"""The whole server under arbitrary datagram sequences (fuzz/server.py): the store commits,
the feed encodes and takes new clients, the journal is strict JSON, the API lists the hosts.

The same harness is the ``server`` target of ``make fuzz`` (coverage-guided, 10^6 runs,
docs/SECURITY.md); here hypothesis drives it with sequences shaped like a fleet's traffic,
every message type with hostile values, for a few seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz.invariants import Escape
from fuzz.odd_datagrams import ODD_DATAGRAMS
from fuzz.server import SEPARATOR, WholeServer, strict_json
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

PROPERTY = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

_characters = (st.characters(exclude_categories=())
               | st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\U0001f600"]))
_text = st.text(_characters, max_size=12)
_numbers = (st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
            | st.sampled_from([10**308 * 10, -(10**400), 2**63, 1e308, 5e-324, 0, 101, 95.5]))
_scalars = st.none() | st.booleans() | _numbers | _text
_values = st.recursive(_scalars, lambda children: st.lists(children, max_size=3)
                       | st.dictionaries(st.text(_characters, max_size=8), children,
                                         max_size=3), max_leaves=10)
_names = st.sampled_from(["web1", "db1", "a", "b.example.org", "x" * 253])


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf}
    return leaf


_plugin_data = st.one_of(
    st.fixed_dictionaries({"cpu_monitor": st.fixed_dictionaries({"cpu_percent": _numbers})}),
    st.fixed_dictionaries({"odd": st.dictionaries(_text, _numbers | _text, max_size=3)}),
    st.fixed_dictionaries({"zfs_monitor": st.fixed_dictionaries({"pools": st.dictionaries(
        _text, st.fixed_dictionaries({"health": _text | st.just("DEGRADED"),
                                      "capacity": _numbers}), max_size=2)})}),
    st.fixed_dictionaries({"nagios_runner": st.fixed_dictionaries({
        "status_code": _numbers, "check_name": _text, "output": _text})}),
    st.builds(lambda depth, leaf: {"deep": _nested(depth, leaf)},
              st.sampled_from([12, 13, 14, 15]), _scalars),
    st.dictionaries(st.text(_characters, max_size=10), _values, max_size=3),
)


@st.composite
def messages(draw: Any) -> dict[str, Any]:
    """A message of every type, its fields well-typed or hostile, extra fields odd."""
    kind = draw(st.sampled_from(["HTB", "BOOT", "SHUT", "MSG", "PLG", "RES", "ACK", "CMD",
                                 "XYZ", "\ud800", ""]))
    message: dict[str, Any] = {"ID": kind, "name": draw(_names)}
    fields = {
        "HTB": {"interval": st.sampled_from([1, 5, 30, 0, -1, 86400 * 8]) | _numbers,
                "rtt": _numbers, "seq": st.integers(-1, 2**64), "ts": _numbers,
                "version": _text},
        "BOOT": {"boot_time": _numbers},
        "MSG": {"text": _text, "level": st.sampled_from(["info", "warning", "error", "x"])},
        "PLG": {"plugins": _plugin_data},
        "RES": {"cmd_id": st.integers() | _text, "rc": st.integers(-2**70, 2**70),
                "output": _text | st.builds(lambda c: c * 5000, _characters)},
    }.get(kind, {})
    for field, strategy in fields.items():
        if draw(st.integers(0, 9)) < 8:
            message[field] = draw(strategy)
    message.update(draw(st.dictionaries(st.text(_characters, max_size=6), _values, max_size=2)))
    return message


@st.composite
def datagrams(draw: Any) -> bytes:
    """One datagram step: a message (a key maybe said twice) or raw bytes, framed."""
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=64)).replace(SEPARATOR, b"")
    else:
        message = draw(messages())
        body = json.dumps(message).encode()  # NaN, Infinity, \ud800 escapes: as a sender may
        if draw(st.integers(0, 4)) == 0:
            shadowed = {"version": draw(_text), "name": draw(_names)}
            body = json.dumps(shadowed).encode()[:-1] + b"," + body[1:]
    source = draw(st.sampled_from([b"", b"4", b"6"]))
    signing = draw(st.sampled_from([b"", b"", b"S", b"S1"]))
    framing = draw(st.sampled_from([b"", b"Z"]))
    return source + signing + framing + body


_steps = st.one_of(
    datagrams(), datagrams(), datagrams(),
    st.builds(lambda s: b"T%d" % s, st.sampled_from([0, 1, 3, 7, 30, 61, 301])),
    st.builds(lambda host, body: b"C" + host.encode() + b"\0" + json.dumps(body).encode(),
              _names, st.fixed_dictionaries({"cmd": _text | st.just("uptime")},
                                            optional={"args": st.lists(_text, max_size=2)})),
    st.builds(lambda fields: b"R" + json.dumps(fields).encode(),
              st.fixed_dictionaries({"rc": st.integers(-1, 3)},
                                    optional={"output": _text})),
)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WholeServer]:
    """One real service tree for the module's examples (each starts from an empty fleet)."""
    server = WholeServer(tmp_path_factory.mktemp("whole"), survey_every=1)
    yield server
    server.close()


@PROPERTY
@given(st.lists(_steps, min_size=1, max_size=5))
@example([b'{"ID":"HTB","name":"x","interval":30,"version":"\\ud800"}',
          b'{"ID":"HTB","name":"after","interval":30}'])
@example([b'{"ID":"HTB","name":"web1","interval":1}',
          b'S{"ID":"PLG","name":"web1","plugins":{"cpu_monitor":{"cpu_percent":95.5},'
          b'"odd":{"\\ud83d\\ude00":5,"x":"\\u0000"}}}',
          b'Cweb1\0{"cmd":"uptime","args":["-p"]}', b'6{"ID":"HTB","name":"web1"}',
          b'R{"rc":0,"output":"up 5 days \\ud83d\\ude00"}', b"T30", b"T3600",
          b'S1Z{"ID":"SHUT","name":"db1"}'])
@example([b'{"ID":"PLG","name":"web1","plugins":{"cpu_monitor":{"cpu_percent":5}}}',
          b'{"ID":"PLG","name":"web1","plugins":{"odd":{"x":1}}}'])  # one flush: both kept
def test_any_sequence_leaves_the_server_whole(whole: WholeServer, sequence: list[bytes]) -> None:
    """Whatever sequence arrives, every invariant of fuzz/server.py holds after it."""
    whole.run(SEPARATOR.join(sequence))


@pytest.mark.parametrize("datagram", [d for _, d, _ in ODD_DATAGRAMS if SEPARATOR not in d],
                         ids=[w for w, d, _ in ODD_DATAGRAMS if SEPARATOR not in d])
def test_odd_datagrams_leave_the_server_whole(whole: WholeServer, datagram: bytes) -> None:
    """Each odd datagram of fuzz/odd_datagrams.py, then a heartbeat: every invariant holds."""
    whole.run(datagram + SEPARATOR + b'{"ID":"HTB","name":"after","interval":30}')


def test_the_checks_can_fail() -> None:
    """strict_json refuses what a strict reader refuses: NaN, a lone surrogate (shadowed
    too), bytes that are not UTF-8. The invariants are not vacuous."""
    for bad in (b'{"a":NaN}', b'{"a":"\\ud800"}', b'{"a":"\\udc00","a":1}', b'"\xed\xa0\x80"'):
        with pytest.raises(Escape):
            strict_json(bad, "test")
    assert strict_json(b'{"a":"\\ud83d\\ude00"}', "test") == {"a": "\U0001f600"}
    assert not math.isnan(strict_json(b"1e308", "test"))


def test_a_broken_store_is_found(whole: WholeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness does catch a store that stops committing (as the server did before the
    text policy): the invariant fails, naming the store."""
    monkeypatch.setattr(whole.parts.store, "failures", whole.parts.store.failures + 1)
    with pytest.raises(Escape, match="store batches failed"):
        whole.run(b'{"ID":"HTB","name":"web1"}')


def test_notifications_reach_their_peers(whole: WholeServer) -> None:
    """The harness's notification peers answer at once, as the services would: a host
    that falls DOWN is sent on every channel (sent, not timed out and given up), and
    nothing is left connecting or in flight."""
    notifier = whole.parts.notifier
    assert notifier is not None and len(notifier.lanes) == 4
    before = {name: lane.retry.stats.succeeded for name, lane in notifier.lanes.items()}
    whole.run(SEPARATOR.join([b'{"ID":"HTB","name":"web1","interval":1}', b"T30"]))
    for name, lane in notifier.lanes.items():
        stats = lane.retry.stats
        assert stats.succeeded > before[name], name
        assert (stats.timeouts, stats.gave_up, len(lane.retry.in_flight)) == (0, 0, 0)
    assert whole.server.reactor.tcpClients == []
