"""PLG batching: as few datagrams as fit, zlib above 512 bytes, oversize plugins alone."""

from __future__ import annotations

import json
import zlib

from heartbeat.agent.batching import pack_plugins
from heartbeat.protocol import decode

HEADER = {"name": "web1", "ts": 1.0, "version": "0.1.0"}


def plugins_of(datagrams: list[bytes]) -> list[dict]:
    return [decode(d)["plugins"] for d in datagrams]


def test_small_results_share_one_plain_datagram() -> None:
    """Plugins that fit together travel in one uncompressed PLG."""
    datagrams = pack_plugins(HEADER, {"a": {"x": 1}, "b": {"y": 2}}, 1400)
    assert len(datagrams) == 1
    assert datagrams[0][:1] == b"{"
    assert decode(datagrams[0]) == {**HEADER, "ID": "PLG",
                                    "plugins": {"a": {"x": 1}, "b": {"y": 2}}}


def test_text_over_512_bytes_is_zlib() -> None:
    """A batch whose JSON passes 512 bytes is sent compressed."""
    datagrams = pack_plugins(HEADER, {"a": {"text": "x" * 600}}, 1400)
    assert len(datagrams) == 1
    assert json.loads(zlib.decompress(datagrams[0]))["plugins"] == {"a": {"text": "x" * 600}}


def test_batches_split_at_max_datagram_in_order() -> None:
    """Incompressible results are split into datagrams no larger than max_datagram."""
    import random

    rng = random.Random(7)
    plugins = {f"p{i}": {"noise": "".join(rng.choice("abcdefghijklmnop0123456789")
                                            for _ in range(500))} for i in range(6)}
    datagrams = pack_plugins(HEADER, plugins, 1200)
    assert all(len(d) <= 1200 for d in datagrams)
    assert 2 <= len(datagrams) < 6
    merged = {k: v for batch in plugins_of(datagrams) for k, v in batch.items()}
    assert list(merged) == list(plugins)
    assert merged == plugins


def test_one_plugin_larger_than_max_goes_alone() -> None:
    """A plugin bigger than max_datagram is still sent, in a datagram of its own."""
    import random

    rng = random.Random(1)
    big = {"noise": "".join(rng.choice("0123456789abcdef") for _ in range(3000))}
    datagrams = pack_plugins(HEADER, {"small": {"a": 1}, "big": big, "tail": {"b": 2}}, 1000)
    assert plugins_of(datagrams) == [{"small": {"a": 1}}, {"big": big}, {"tail": {"b": 2}}]


def test_plugin_no_datagram_can_carry_becomes_an_error() -> None:
    """Data past what the server inflates is replaced by an error saying so."""
    datagrams = pack_plugins(HEADER, {"huge": {"t": "y" * 5000}, "ok": {"a": 1}}, 1400,
                             max_inflated=2000)
    batches = plugins_of(datagrams)
    assert batches[0]["huge"]["error"].startswith("data too large: ")
    assert batches[0]["ok"] == {"a": 1}
