"""Dynamic DNS against a real BIND ``named`` with a TSIG-signed dynamic zone.

End to end: heartbeats to the real twistd server from new source addresses
(127.0.0.2, 127.0.0.3, ::1) change what ``dig`` answers for <host>.<zone>.
In-process: a wrong key and a server that never answers prove the failure paths
with the real nsupdate.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredQueue

from heartbeat.events import Event, EventBus
from heartbeat.protocol import seal
from heartbeat.server.compose import wire
from heartbeat.server.dns import DnsService, DnsSettings
from heartbeat.server.registry import Registry
from tests.bind import DIG, NAMED, NSUPDATE, NamedServer, tsig_key
from tests.peers import within
from tests.support import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(None in (NAMED, NSUPDATE, DIG),
                       reason="BIND not installed (.ci/apt-install: bind9 bind9-dnsutils)"),
]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = _has_ipv6_loopback()


@pytest.fixture
def named(tmp_path: Path) -> Iterator[NamedServer]:
    server = NamedServer(tmp_path / "named").start()
    yield server
    server.stop()


def send_from(source: str, port: int, message: dict[str, Any]) -> None:
    """One datagram to the server from the loopback address ``source``."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.sendto(json.dumps(message).encode(), (source if family == socket.AF_INET6
                                                 else "127.0.0.1", port))


def test_heartbeats_from_new_addresses_update_bind(server_factory: Any,
                                                   named: NamedServer) -> None:
    """First sight and each address change of web1 reach named; dig answers the newest."""
    server = server_factory(hb_host="::" if IPV6 else "127.0.0.1", dyndomains=[named.zone],
                            nsupdate_bin=NSUPDATE, nsupdate_key=str(named.key),
                            nsupdate_server=f"127.0.0.1 {named.port}", dns_timeout=5.0)
    fqdn = f"web1.{named.zone}"
    send_from("127.0.0.2", server.udp_port, {"ID": "HTB", "name": "web1"})
    wait_until(lambda: named.query(fqdn, "A") == ["127.0.0.2"])
    send_from("127.0.0.3", server.udp_port, {"ID": "HTB", "name": "web1"})
    wait_until(lambda: named.query(fqdn, "A") == ["127.0.0.3"])
    expected = [("web1", fqdn, "A", "127.0.0.2"), ("web1", fqdn, "A", "127.0.0.3")]
    if IPV6:
        send_from("::1", server.udp_port, {"ID": "HTB", "name": "web1"})
        wait_until(lambda: named.query(fqdn, "AAAA") == ["::1"])
        assert named.query(fqdn, "A") == ["127.0.0.3"]
        expected.append(("web1", fqdn, "AAAA", "::1"))
    status = server.get("/api/0/status")["dns"]
    assert {k: status[k] for k in ("domains", "queued", "updated", "gave_up")} == {
        "domains": [named.zone], "queued": 0, "updated": len(expected), "gave_up": 0}
    journaled = wait_until(lambda: (lines := [
        (e["event"]["host"], e["event"]["name"], e["event"]["rtype"], e["event"]["addr"])
        for e in server.journal_lines()
        if e.get("event", {}).get("type") == "dns.updated"]) and len(lines) == len(expected)
        and lines)
    assert journaled == expected


def test_dns_false_host_is_left_alone(server_factory: Any, named: NamedServer) -> None:
    """A host with dns: false gets no record, while its neighbour does."""
    server = server_factory(dyndomains=[named.zone], nsupdate_bin=NSUPDATE,
                            nsupdate_key=str(named.key), nsupdate_server=f"127.0.0.1 {named.port}",
                            hosts={"private": {"dns": False}})
    send_from("127.0.0.2", server.udp_port, {"ID": "HTB", "name": "private"})
    send_from("127.0.0.2", server.udp_port, {"ID": "HTB", "name": "public"})
    wait_until(lambda: named.query(f"public.{named.zone}", "A") == ["127.0.0.2"])
    assert named.query(f"private.{named.zone}", "A") == []
    assert server.get("/api/0/status")["dns"]["skipped"] == {"dns_false": 1}


def test_a_dns_label_cannot_be_taken_over(server_factory: Any, named: NamedServer) -> None:
    """sig1 must sign; unsigned heartbeats naming SIG1 or sig1.evil (same DNS label) from
    another address never move sig1's record, and each is counted as label_taken."""
    secret = "sig1-secret-0123456789abcdef"
    server = server_factory(dyndomains=[named.zone], nsupdate_bin=NSUPDATE,
                            nsupdate_key=str(named.key), nsupdate_server=f"127.0.0.1 {named.port}",
                            keys={"sig1": secret},
                            hosts={"sig1": {"key": "sig1", "require_signed": True}})
    fqdn = f"sig1.{named.zone}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        s.sendto(seal(json.dumps({"ID": "HTB", "name": "sig1"}).encode(), "sig1",
                      secret.encode(), int(time.time() * 1e6)), ("127.0.0.1", server.udp_port))
    wait_until(lambda: named.query(fqdn, "A") == ["127.0.0.2"])
    send_from("127.0.0.6", server.udp_port, {"ID": "HTB", "name": "SIG1"})
    send_from("127.0.0.7", server.udp_port, {"ID": "HTB", "name": "sig1.evil"})
    wait_until(lambda: server.get("/api/0/status")["dns"]["skipped"] == {"label_taken": 2})
    assert server.request("POST", "/api/0/hosts/SIG1/dns")[0] == 409
    assert named.query(fqdn, "A") == ["127.0.0.2"]
    assert server.get("/api/0/status")["dns"]["updated"] == 1


def test_a_fleet_of_new_hosts_reaches_bind_in_a_few_nsupdate_runs(
        server_factory: Any, named: NamedServer) -> None:
    """250 new hosts at once: every record is in named, set by a handful of nsupdate
    runs of up to 100 records (one run a record took a 1,000-host fleet 25 s)."""
    server = server_factory(dyndomains=[named.zone], nsupdate_bin=NSUPDATE,
                            nsupdate_key=str(named.key), nsupdate_server=f"127.0.0.1 {named.port}",
                            dns_timeout=5.0, source_rate=1e6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        for n in range(250):
            s.sendto(json.dumps({"ID": "HTB", "name": f"fleet{n:03d}"}).encode(),
                     ("127.0.0.1", server.udp_port))
    wait_until(lambda: server.get("/api/0/status")["hosts"]["total"] == 250)
    dns = wait_until(lambda: (status := server.get("/api/0/status")["dns"])["updated"] == 250
                     and status)
    assert (dns["gave_up"], dns["queued"]) == (0, 0)
    assert dns["runs"] <= 10
    for n in (0, 99, 100, 249):
        assert named.query(f"fleet{n:03d}.{named.zone}", "A") == ["127.0.0.2"]


class Outcomes:
    """A DnsService on the real reactor whose results arrive in a queue."""

    def __init__(self, settings: DnsSettings) -> None:
        from twisted.internet import reactor

        self.bus = EventBus(on_error=lambda s, e, error: None)
        self.queue: DeferredQueue[Event] = DeferredQueue()
        self.bus.subscribe(self.queue.put, ["dns.updated", "dns.failed"])
        self.service = DnsService(reactor, Registry(grace=10, default_interval=30), self.bus,
                                  settings)
        wire(self.bus, dns=self.service)
        self.service.startService()


@pytest_twisted.ensureDeferred
async def test_wrong_key_is_refused_and_reported(named: NamedServer, tmp_path: Path) -> None:
    """A key with the right name but another secret: named answers BADSIG, nothing changes."""
    wrong = tsig_key(tmp_path / "wrong.key")
    rig = Outcomes(DnsSettings(domains=(named.zone,), nsupdate_bin=str(NSUPDATE),
                               server=f"127.0.0.1 {named.port}", key=str(wrong), retries=0))
    rig.service.queue("web1", "127.0.0.9")
    event = await within(rig.queue.get(), 10)
    await rig.service.stopService()
    assert (event.kind, event.data["final"]) == ("dns.failed", True)
    assert "BADSIG" in event.data["reason"]
    assert named.query(f"web1.{named.zone}", "A") == []


@pytest_twisted.ensureDeferred
async def test_server_that_never_answers_gets_nsupdate_killed(tmp_path: Path) -> None:
    """nsupdate talking to a silent port is killed at dns_timeout and reported as a timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        rig = Outcomes(DnsSettings(domains=("dyn.test",), nsupdate_bin=str(NSUPDATE),
                                   server=f"127.0.0.1 {port}", timeout=0.5, retries=0))
        rig.service.queue("web1", "127.0.0.9")
        event = await within(rig.queue.get(), 10)
        await rig.service.stopService()
    assert (event.kind, event.data["reason"], event.data["final"]) == (
        "dns.failed", "nsupdate timed out after 0.5s and was killed", True)
