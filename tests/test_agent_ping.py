"""ping_monitor: parsing every common ping summary, and the real system ping on loopback."""

from __future__ import annotations

import shutil

import pytest
import pytest_twisted

from heartbeat.agent.plugin import PluginContext, discover_plugins
from heartbeat.agent.plugins.ping_monitor import parse_ping
from heartbeat.config.loader import parse_section
from tests.agent_fakes import sync_threads

IPUTILS = """PING 192.0.2.1 (192.0.2.1) 56(84) bytes of data.
64 bytes from 192.0.2.1: icmp_seq=1 ttl=64 time=0.411 ms

--- 192.0.2.1 ping statistics ---
3 packets transmitted, 2 received, 33.3333% packet loss, time 2003ms
rtt min/avg/max/mdev = 0.411/0.520/0.629/0.109 ms
"""
BUSYBOX = """PING 192.0.2.1 (192.0.2.1): 56 data bytes

--- 192.0.2.1 ping statistics ---
3 packets transmitted, 3 packets received, 0% packet loss
round-trip min/avg/max = 0.1/0.2/0.3 ms
"""
BSD = """--- 192.0.2.1 ping statistics ---
5 packets transmitted, 5 packets received, 0.0% packet loss
round-trip min/avg/max/stddev = 0.052/0.067/0.087/0.012 ms
"""
LOST = """--- 192.0.2.9 ping statistics ---
3 packets transmitted, 0 received, 100% packet loss, time 2049ms
"""


def test_parse_iputils() -> None:
    """iputils: counts, fractional loss and min/avg/max/mdev."""
    assert parse_ping(IPUTILS) == {"rtt_min": 0.411, "rtt_avg": 0.52, "rtt_max": 0.629,
                                   "rtt_mdev": 0.109, "loss_percent": 33.3333,
                                   "transmitted": 3, "received": 2, "reachable": 1}


def test_parse_bsd_and_busybox() -> None:
    """BSD (stddev) and busybox (no deviation) summaries parse."""
    assert parse_ping(BSD) == {"rtt_min": 0.052, "rtt_avg": 0.067, "rtt_max": 0.087,
                               "rtt_mdev": 0.012, "loss_percent": 0.0, "transmitted": 5,
                               "received": 5, "reachable": 1}
    assert parse_ping(BUSYBOX) == {"rtt_min": 0.1, "rtt_avg": 0.2, "rtt_max": 0.3,
                                   "rtt_mdev": None, "loss_percent": 0.0, "transmitted": 3,
                                   "received": 3, "reachable": 1}


def test_parse_all_lost() -> None:
    """No replies: 100 % loss, unreachable, RTTs null."""
    assert parse_ping(LOST) == {"rtt_min": None, "rtt_avg": None, "rtt_max": None,
                                "rtt_mdev": None, "loss_percent": 100.0, "transmitted": 3,
                                "received": 0, "reachable": 0}


@pytest.mark.skipif(shutil.which("ping") is None, reason="no ping (.ci/apt-install has it)")
@pytest_twisted.ensureDeferred
async def test_real_ping_loopback_and_unresolvable() -> None:
    """The system ping reaches 127.0.0.1; an unresolvable target reports its error."""
    from twisted.internet import reactor

    cls = discover_plugins([], "x")["ping_monitor"]
    options = parse_section(cls.Options, {"hosts": ["127.0.0.1", "no-such-host.invalid"],
                                          "count": 2, "ping_interval": 0.2,
                                          "ping_timeout": 2}, "x")
    data = await cls(options, PluginContext(reactor, sync_threads)).collect()
    local = data["targets"]["127.0.0.1"]
    assert (local["transmitted"], local["received"], local["loss_percent"],
            local["reachable"]) == (2, 2, 0.0, 1)
    assert 0 <= local["rtt_min"] <= local["rtt_avg"] <= local["rtt_max"]
    missing = data["targets"]["no-such-host.invalid"]
    assert (missing["reachable"], missing["loss_percent"]) == (0, 100.0)
    assert "no-such-host.invalid" in missing["error"]
