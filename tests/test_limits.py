"""Resource bounds of ingest: per-source rate, admission of new host names, plugin names."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from heartbeat.config.loader import parse_config
from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.events import EventBus
from heartbeat.protocol import Limits, seal
from heartbeat.server.compose import make_ingest
from heartbeat.server.ingest import MAX_UNKNOWN_IDS, IngestProtocol, IngestStats
from heartbeat.server.limits import NETWORK_SHARE, HostAdmission, SourceRateLimit, source_key
from heartbeat.server.registry import Registry


class SourceRateLimitTests:
    def test_rate_per_second_window(self) -> None:
        """A source gets ``rate`` datagrams in each one-second window, then none until the next."""
        limit = SourceRateLimit(rate=10)
        assert [limit.allow("10.0.0.1", 100.0) for _ in range(12)] == [True] * 10 + [False] * 2
        assert [limit.allow("10.0.0.1", 100.9) for _ in range(2)] == [False, False]
        assert [limit.allow("10.0.0.1", 101.0) for _ in range(11)] == [True] * 10 + [False]
        assert [limit.allow("10.0.0.1", 200.0) for _ in range(11)] == [True] * 10 + [False]

    def test_sources_are_independent(self) -> None:
        """One source over its rate does not cost another anything."""
        limit = SourceRateLimit(rate=2)
        assert [limit.allow("10.0.0.1", 1.0) for _ in range(3)] == [True, True, False]
        assert [limit.allow("10.0.0.2", 1.0) for _ in range(2)] == [True, True]

    def test_fractional_rate(self) -> None:
        """A rate below one per second allows one datagram per 1/rate seconds."""
        limit = SourceRateLimit(rate=0.5)
        assert [limit.allow("a", t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)] == [
            True, False, True, False, True]

    def test_table_is_bounded_under_a_flood_of_addresses(self) -> None:
        """200,000 invented addresses in one second never grow the table past its size;
        the overflow passes uncounted, and the table empties with the next window."""
        limit = SourceRateLimit(rate=100, max_sources=1000)
        sizes = set()
        for n in range(200_000):
            assert limit.allow(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 5.0 + n * 1e-6)
            sizes.add(len(limit))
        assert max(sizes) == 1000
        assert limit.to_json() == {"rate": 100, "sources": 1000, "overflow": 199_000}
        assert limit.allow("10.0.0.1", 6.0)
        assert len(limit) == 1

    def test_ipv6_limited_per_64(self) -> None:
        """Addresses of one IPv6 /64 share a bucket; IPv4 addresses each have their own."""
        assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
        assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
        assert source_key("fe80::1%eth0") == socket.inet_pton(socket.AF_INET6, "fe80::")[:8]
        assert source_key("192.0.2.1") == "192.0.2.1"
        limit = SourceRateLimit(rate=1)
        assert limit.allow(source_key("2001:db8::1"), 0.0)
        assert not limit.allow(source_key("2001:db8::2"), 0.0)


    def test_one_ipv6_neighbour_does_not_silence_its_lan(self) -> None:
        """An IPv6 sender is held to its own rate; its /64 to NETWORK_SHARE times that, so
        a neighbour flooding from one address leaves the LAN's other agents their rate."""
        limit = SourceRateLimit(rate=2)
        assert [limit.allow_address("2001:db8::66", 0.0) for _ in range(5)] == [
            True, True, False, False, False]
        assert [limit.allow_address("2001:db8::1", 0.0) for _ in range(3)] == [
            True, True, False]
        assert limit.allow_address("2001:db8:0:1::66", 0.0)  # another /64
        spoofed = [limit.allow_address(f"2001:db8::{n:x}", 0.0)
                   for n in range(0x100, 0x100 + 2 * NETWORK_SHARE)]
        assert spoofed.count(True) == 2 * NETWORK_SHARE - 4  # the /64's allowance, all in all
        assert limit.allow_address("192.0.2.1", 0.0) and limit.allow_address("192.0.2.2", 0.0)

    def test_spoofed_junk_does_not_use_up_a_signing_hosts_rate(self) -> None:
        """Junk from a signing host's address, signed badly or not at all, is counted
        against the address; the host's own signed heartbeats (MAC checked first) are not."""
        config = parse_config(ServerConfig, """
keys: {web1: web1-only-secret-0123456789}
hosts: {web1: {key: web1, require_signed: true}}
source_rate: 5
""", "test.yaml")
        clock = Clock()
        clock.advance(1_711_234_567.0)
        registry = Registry(grace=10, default_interval=30, host_config=config.hosts)
        bus = EventBus(on_error=lambda s, e, x: pytest.fail(f"subscriber failed: {x!r}"))
        protocol = make_ingest(config, registry, bus, clock)
        protocol.makeConnection(FakeDatagramTransport())
        victim = ("192.0.2.5", 4000)
        for n in range(50):  # a forged MAC, and plain junk
            forged = seal(b'{"ID":"HTB","name":"web1"}', "web1", b"not-the-key" * 3, n + 1)
            protocol.datagramReceived(forged, victim)
            protocol.datagramReceived(b'{"ID":"HTB","name":"web1"}', victim)
        seq = int(clock.seconds() * 1e6)
        for n in range(3):
            protocol.datagramReceived(seal(b'{"ID":"HTB","name":"web1"}', "web1",
                                           b"web1-only-secret-0123456789", seq + n), victim)
        assert protocol.stats.accepted == 3
        assert protocol.stats.dropped["rate_limited"] == 100 - 5
        assert registry.hosts["web1"].state.value == "UP"


class HostAdmissionTests:
    def test_per_hour_window_slides(self) -> None:
        """At most ``per_hour`` new names in any hour; slots come back as the hour slides."""
        admission = HostAdmission(per_hour=3, ceiling=100)
        assert [admission.admit(0, t) for t in (0.0, 10.0, 20.0, 30.0)] == [
            None, None, None, "max_hosts"]
        assert admission.admit(0, 3600.0) is None
        assert admission.admit(0, 3600.5) == "max_hosts"
        assert admission.admit(0, 3610.0) is None
        assert admission.to_json() == {"new_hosts_admitted": 5, "max_hosts": 3,
                                       "host_ceiling": 100}

    def test_ceiling(self) -> None:
        """No new host once the registry holds ``ceiling`` hosts, whatever the hour allows."""
        admission = HostAdmission(per_hour=100, ceiling=5)
        assert admission.admit(4, 0.0) is None
        assert admission.admit(5, 1.0) == "max_unconfigured_hosts"
        assert admission.admitted == 1


def _protocol(clock: Clock, rate: SourceRateLimit | None = None,
              **bounds: Any) -> tuple[IngestProtocol, Registry]:
    """Ingest with the source ``rate`` over a registry with the other ``bounds``."""
    registry = Registry(grace=5, default_interval=10,
                        host_config={"configured": HostConfig()}, **bounds)
    bus = EventBus(on_error=lambda s, e, x: pytest.fail(f"subscriber failed: {x!r}"))
    protocol = IngestProtocol(registry, bus, clock, Limits(), IngestStats(), rate=rate)
    protocol.makeConnection(FakeDatagramTransport())
    return protocol, registry


def _send(protocol: IngestProtocol, message: dict[str, Any], ip: str = "10.0.0.1") -> None:
    protocol.datagramReceived(json.dumps(message).encode(), (ip, 5000))


class IngestBoundsTests:
    def test_invented_names_beyond_max_hosts_dropped(self) -> None:
        """New names past max_hosts are dropped and counted; known and configured ones pass."""
        clock = Clock()
        protocol, registry = _protocol(clock, admission=HostAdmission(per_hour=3, ceiling=10))
        _send(protocol, {"ID": "HTB", "name": "old"})
        for n in range(10):
            _send(protocol, {"ID": "HTB", "name": f"fake{n}"})
        _send(protocol, {"ID": "HTB", "name": "old"})
        _send(protocol, {"ID": "HTB", "name": "configured"})
        _send(protocol, {"ID": "XYZ", "name": "not-a-host"})
        assert sorted(registry.hosts) == ["configured", "fake0", "fake1", "old"]
        assert protocol.status() == {
            "received": 14, "accepted": 6, "dropped": {"max_hosts": 8}, "dropped_total": 8,
            "unknown_ids": {"XYZ": 1}, "replies": 5, "reply_errors": 0,
            "receive_buffer": None, "kernel_drops": None,  # no port: a protocol alone
            "admission": {"new_hosts_admitted": 3, "max_hosts": 3, "host_ceiling": 10}}
        clock.advance(3600)
        _send(protocol, {"ID": "MSG", "name": "late", "text": "hello"})
        assert "late" in registry.hosts

    def test_ceiling_counts_every_host(self) -> None:
        """The ceiling holds however slowly the names arrive."""
        clock = Clock()
        protocol, registry = _protocol(clock, admission=HostAdmission(per_hour=5, ceiling=4))
        for n in range(8):
            clock.advance(3600)
            _send(protocol, {"ID": "BOOT", "name": f"h{n}"})
        assert len(registry) == 4
        assert protocol.stats.dropped == {"max_unconfigured_hosts": 4}

    def test_rate_limited_before_decoding(self) -> None:
        """Datagrams over a source's rate are dropped before decode (even garbage) and counted."""
        clock = Clock()
        protocol, _ = _protocol(clock, rate=SourceRateLimit(rate=3))
        for _ in range(3):
            _send(protocol, {"ID": "HTB", "name": "h"})
        protocol.datagramReceived(b"garbage", ("10.0.0.1", 1))
        _send(protocol, {"ID": "HTB", "name": "other"}, ip="10.0.0.2")
        clock.advance(1.0)
        _send(protocol, {"ID": "HTB", "name": "h"})
        assert (protocol.stats.accepted, dict(protocol.stats.dropped)) == (
            5, {"rate_limited": 1})
        assert protocol.status()["sources"] == {"rate": 3, "sources": 1, "overflow": 0}

    def test_plugin_names_per_host_bounded(self) -> None:
        """A PLG that would take a host past max_plugins names is dropped; known names pass."""
        clock = Clock()
        protocol, registry = _protocol(clock, max_plugins=3)
        _send(protocol, {"ID": "PLG", "name": "h", "plugins": {"a": 1, "b": 2}})
        _send(protocol, {"ID": "PLG", "name": "h", "plugins": {"c": 3, "d": 4}})
        _send(protocol, {"ID": "PLG", "name": "h", "plugins": {"a": 5, "b": 6, "c": 7}})
        _send(protocol, {"ID": "PLG", "name": "new", "plugins": {str(n): n for n in range(4)}})
        host = registry.hosts["h"]
        assert sorted(host.plugins) == ["a", "b", "c"]
        assert "new" not in registry.hosts
        assert protocol.stats.dropped == {"max_plugins": 2}

    def test_plugin_data_bytes_bounded(self) -> None:
        """Plugin data is counted as the bytes of the PLG texts it came from: a PLG that
        would take the total past max_plugin_bytes is dropped, unless its host is configured;
        data replaced by no more data passes, and a removed host gives its bytes back."""
        clock = Clock()
        protocol, registry = _protocol(clock, max_plugin_bytes=1100)

        def plg(name: str, plugins: dict[str, str]) -> dict[str, Any]:
            return {"ID": "PLG", "name": name, "plugins": plugins}

        size = len(json.dumps(plg("h", {"a": "x" * 300, "b": "y" * 300})))
        _send(protocol, plg("h", {"a": "x" * 300, "b": "y" * 300}))
        _send(protocol, plg("g", {"a": "z" * 400}))
        _send(protocol, plg("h", {"a": "x" * 300}))  # b still holds the first PLG's text
        _send(protocol, plg("h", {"b": "w" * 10}))  # now it does not
        _send(protocol, plg("g", {"a": "z" * 800}))
        _send(protocol, plg("configured", {"a": "c" * 700}))
        _send(protocol, plg("h", {"b": "v" * 10}))  # over the limit now, but adds nothing
        held = {name: sorted(host.plugins) for name, host in registry.hosts.items()}
        assert held == {"h": ["a", "b"], "configured": ["a"]}
        assert protocol.stats.dropped == {"max_plugin_bytes": 2}
        assert registry.plugin_bytes == sum(host.plugin_bytes for host in registry.hosts.values())
        assert registry.hosts["h"].plugin_bytes == sum(
            len(json.dumps(plg("h", plugins))) for plugins in ({"a": "x" * 300}, {"b": "v" * 10}))
        assert size > registry.hosts["h"].plugin_bytes
        registry.remove("configured", 1.0)
        _send(protocol, plg("g", {"a": "z" * 400}))
        assert sorted(registry.hosts) == ["g", "h"]
        assert protocol.status()["plugin_data"] == {"bytes": registry.plugin_bytes,
                                                    "max_plugin_bytes": 1100}

    @given(st.lists(st.tuples(st.sampled_from(["h", "g"]),
                              st.sets(st.sampled_from(["a", "b", "c", "d"]), min_size=1),
                              st.integers(0, 50)), max_size=30))
    def test_plugin_bytes_are_the_texts_still_held(
            self, sequence: list[tuple[str, set[str], int]]) -> None:
        """After any sequence of PLGs, each host is charged the bytes of exactly the texts
        some plugin's latest data still came from: a plain model, asked after every PLG,
        for the registry's shortcut when a PLG carries the same plugins as the one before."""
        protocol, registry = _protocol(Clock())
        messages = [{"ID": "PLG", "name": name, "seq": n,
                     "plugins": {plugin: "x" * pad for plugin in sorted(names)}}
                    for n, (name, names, pad) in enumerate(sequence)]
        came_from: dict[str, dict[str, int]] = {}
        for n, message in enumerate(messages):
            _send(protocol, message)
            for plugin in message["plugins"]:
                came_from.setdefault(message["name"], {})[plugin] = n
            for name, held in came_from.items():
                host = registry.hosts[name]
                assert sorted(host.plugins) == sorted(held)
                assert host.plugin_bytes == sum(
                    len(json.dumps(messages[came])) for came in set(held.values()))
            assert registry.plugin_bytes == sum(h.plugin_bytes for h in registry.hosts.values())

    def test_unknown_ids_table_bounded(self) -> None:
        """A flood of invented IDs is counted under a bounded number of keys."""
        protocol, _ = _protocol(Clock())
        for n in range(MAX_UNKNOWN_IDS + 50):
            _send(protocol, {"ID": f"X{n}", "name": "h"})
        counts = protocol.stats.unknown_ids
        assert len(counts) == MAX_UNKNOWN_IDS + 1
        assert (counts["(other)"], sum(counts.values())) == (50, MAX_UNKNOWN_IDS + 50)
