"""DnsService with a Clock and a fake spawnProcess: queueing, coalescing, kill, backoff, trigger."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.events import HOST_ADDRESS, HOST_REMOVED, Event, EventBus
from heartbeat.server.compose import wire
from heartbeat.server.dns import DnsError, DnsService, DnsSettings, nsupdate_script
from heartbeat.server.registry import Host, Registry


class FakeProcess:
    """What spawnProcess returned: records stdin and signals; the test ends it."""

    def __init__(self, protocol: Any, executable: str, args: list[str]) -> None:
        self.protocol = protocol
        self.executable = executable
        self.args = args
        self.stdin = b""
        self.stdin_closed = False
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.stdin += data

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def end(self, code: int | None = 0, signal: int | None = None, output: bytes = b"") -> None:
        if output:
            self.protocol.errReceived(output)
        reason = ProcessDone(0) if code == 0 else ProcessTerminated(code, signal)
        self.protocol.processEnded(Failure(reason))


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.spawn_error: OSError | None = None

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None,
                     **kwargs: Any) -> FakeProcess:
        if self.spawn_error is not None:
            raise self.spawn_error
        process = FakeProcess(protocol, executable, args)
        self.processes.append(process)
        protocol.makeConnection(process)
        return process


class Rig:
    def __init__(self, domains: tuple[str, ...] = ("dyn.example.com",),
                 hosts: dict[str, HostConfig] | None = None,
                 known: tuple[Host, ...] = (), **settings: Any) -> None:
        self.reactor = FakeReactor()
        self.registry = Registry(grace=10, default_interval=30, host_config={
            "private": HostConfig(dns=False), **(hosts or {})})
        self.registry.restore(known, 0.0)
        self.bus = EventBus(on_error=self._raise)
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append, ["dns.updated", "dns.failed"])
        self.dns = DnsService(self.reactor, self.registry, self.bus, DnsSettings(**{
            "domains": domains, "nsupdate_bin": "/usr/bin/nsupdate",
            "server": "127.0.0.1 5353", "key": "/etc/ddns.key", "ttl": 60, "timeout": 10.0,
            "retries": 2, **settings}))
        wire(self.bus, dns=self.dns)
        self.dns.startService()

    @staticmethod
    def _raise(subscriber: Any, event: Event, error: BaseException) -> None:
        raise error

    def moved(self, host: str, addr: str, old: str | None = None) -> None:
        self.bus.publish(Event(HOST_ADDRESS, host, self.reactor.seconds(),
                               {"addr": addr, "old": old}))

    @property
    def running(self) -> FakeProcess:
        return self.reactor.processes[-1]

    def outcomes(self) -> list[tuple[str, str, str, str, dict[str, Any]]]:
        return [(e.kind, e.data["name"], e.data["rtype"], e.data["addr"],
                 {k: v for k, v in e.data.items() if k not in ("name", "zone", "rtype", "addr")})
                for e in self.events]


def script(name: str, zone: str, rtype: str, addr: str) -> bytes:
    return (f"server 127.0.0.1 5353\nzone {zone}\nupdate delete {name}. {rtype}\n"
            f"update add {name}. 60 {rtype} {addr}\nsend\n").encode()


def test_address_event_runs_one_nsupdate_per_zone_in_turn() -> None:
    """First sight of web1 updates web1.<zone> A in each dyndomain, one process at a time."""
    rig = Rig(domains=("dyn.example.com", "example.net"))
    rig.moved("web1.lan", "10.0.0.7")
    assert len(rig.reactor.processes) == 1
    first = rig.running
    assert (first.executable, first.args, first.stdin, first.stdin_closed) == (
        "/usr/bin/nsupdate",
        ["/usr/bin/nsupdate", "-t", "5", "-u", "1", "-r", "1", "-k", "/etc/ddns.key"],
        script("web1.dyn.example.com", "dyn.example.com", "A", "10.0.0.7"), True)
    first.end(0)
    assert rig.running.stdin == script("web1.example.net", "example.net", "A", "10.0.0.7")
    rig.running.end(0)
    assert rig.outcomes() == [
        ("dns.updated", "web1.dyn.example.com", "A", "10.0.0.7", {"attempts": 1}),
        ("dns.updated", "web1.example.net", "A", "10.0.0.7", {"attempts": 1})]
    assert (rig.dns.to_json()["updated"], rig.dns.to_json()["queued"]) == (2, 0)


def test_ipv6_address_is_an_aaaa_record() -> None:
    """An IPv6 source address updates the AAAA record, written canonically."""
    rig = Rig()
    rig.moved("web1", "2001:DB8:0:0::1")
    assert rig.running.stdin == script("web1.dyn.example.com", "dyn.example.com", "AAAA",
                                       "2001:db8::1")


def test_script_without_server_line() -> None:
    """Without nsupdate_server, nsupdate finds the zone's primary itself."""
    rig = Rig(server=None, key=None)
    rig.moved("web1", "10.0.0.7")
    assert rig.running.args == ["/usr/bin/nsupdate", "-t", "5", "-u", "1", "-r", "1"]
    assert rig.running.stdin.startswith(b"zone dyn.example.com\n")


@pytest.mark.parametrize(("host", "addr", "code"), [
    ("private", "10.0.0.1", "dns_false"),
    ("bad_name", "10.0.0.1", "not_a_label"),
    ("web1", "fe80::1%eth0", "scoped_address"),
])
def test_hosts_that_cannot_be_updated_are_skipped_and_counted(
        host: str, addr: str, code: str) -> None:
    """dns: false, a name that is no DNS label, a scoped address: no process, a counter."""
    rig = Rig()
    rig.moved(host, addr)
    assert (rig.reactor.processes, rig.dns.to_json()["skipped"]) == ([], {code: 1})


def test_only_the_newest_address_is_kept_while_queued() -> None:
    """A host that moves twice while an update runs is updated once more, to the newest address."""
    rig = Rig()
    rig.moved("web1", "10.0.0.1")
    rig.moved("web1", "10.0.0.2")
    rig.moved("web1", "10.0.0.3")
    assert len(rig.reactor.processes) == 1
    rig.running.end(0)
    assert rig.running.stdin == script("web1.dyn.example.com", "dyn.example.com", "A", "10.0.0.3")
    rig.running.end(0)
    assert len(rig.reactor.processes) == 2
    assert rig.dns.to_json()["coalesced"] == 1


def test_hung_nsupdate_is_killed_and_retried() -> None:
    """An nsupdate still running after dns_timeout gets SIGKILL; the update is retried."""
    rig = Rig()
    rig.moved("web1", "10.0.0.1")
    rig.reactor.advance(9.9)
    assert rig.running.signals == []
    rig.reactor.advance(0.1)
    assert rig.running.signals == ["KILL"]
    rig.running.end(None, 9)
    assert rig.outcomes() == [("dns.failed", "web1.dyn.example.com", "A", "10.0.0.1", {
        "reason": "nsupdate timed out after 10s and was killed", "attempt": 1, "final": False,
        "retry_in": 2.0})]
    rig.reactor.advance(2)
    assert len(rig.reactor.processes) == 2
    assert rig.dns.to_json()["timeouts"] == 1


def test_failures_back_off_then_give_up() -> None:
    """Failures retry after 2 s then 4 s; after dns_retries the update is given up."""
    rig = Rig(retries=2)
    rig.moved("web1", "10.0.0.1")
    rig.running.end(2, output=b"; TSIG error with server: tsig indicates error\n"
                              b"update failed: NOTAUTH(BADSIG)\n")
    rig.reactor.advance(1.9)
    assert len(rig.reactor.processes) == 1
    rig.reactor.advance(0.1)
    rig.running.end(2, output=b"update failed: NOTAUTH(BADSIG)\n")
    rig.reactor.advance(4)
    rig.running.end(2, output=b"update failed: NOTAUTH(BADSIG)\n")
    rig.reactor.advance(1000)
    assert len(rig.reactor.processes) == 3
    reason = "nsupdate exit 2: update failed: NOTAUTH(BADSIG)"
    assert [data for *_, data in rig.outcomes()] == [
        {"reason": reason, "attempt": 1, "final": False, "retry_in": 2.0},
        {"reason": reason, "attempt": 2, "final": False, "retry_in": 4.0},
        {"reason": reason, "attempt": 3, "final": True, "retry_in": None}]
    status = rig.dns.to_json()
    assert (status["failed_attempts"], status["gave_up"], status["last_error"]) == (
        3, 1, f"web1.dyn.example.com A: {reason}")


def test_new_address_replaces_an_update_waiting_for_retry() -> None:
    """A host that moves while its failed update waits is updated at once, to the new address."""
    rig = Rig()
    rig.moved("web1", "10.0.0.1")
    rig.running.end(2, output=b"; Communication with 127.0.0.1#5353 failed: timed out\n")
    rig.moved("web1", "10.0.0.2")
    assert rig.running.stdin == script("web1.dyn.example.com", "dyn.example.com", "A", "10.0.0.2")
    rig.running.end(0)
    rig.reactor.advance(100)
    assert len(rig.reactor.processes) == 2


def test_missing_binary_is_a_failure() -> None:
    """spawnProcess refusing (no such file) is a failed attempt, retried like others."""
    rig = Rig()
    rig.reactor.spawn_error = FileNotFoundError(2, "No such file or directory")
    rig.moved("web1", "10.0.0.1")
    assert rig.outcomes()[0][4]["reason"] == (
        "cannot run /usr/bin/nsupdate: [Errno 2] No such file or directory")


def test_trigger_queues_the_current_address() -> None:
    """trigger(host) queues the host's records from its known address; unknown hosts are errors."""
    rig = Rig()
    rig.registry.apply({"ID": "HTB", "name": "web1"}, ("10.0.0.9", 40000), 0.0)
    assert rig.dns.trigger("web1") == ["web1.dyn.example.com"]
    assert rig.running.stdin == script("web1.dyn.example.com", "dyn.example.com", "A", "10.0.0.9")
    with pytest.raises(DnsError) as unknown:
        rig.dns.trigger("nope")
    assert (unknown.value.code, str(unknown.value)) == ("unknown_host", "no host named 'nope'")
    rig.registry.apply({"ID": "HTB", "name": "private"}, ("10.0.0.8", 40000), 0.0)
    with pytest.raises(DnsError) as opted_out:
        rig.dns.trigger("private")
    assert opted_out.value.code == "dns_false"


def test_queued_before_start_runs_at_start() -> None:
    """Address events before startService are queued and drained when it starts."""
    rig = Rig()
    rig.dns.stopService()
    rig.moved("web1", "10.0.0.1")
    assert rig.reactor.processes == []
    rig.dns.startService()
    assert len(rig.reactor.processes) == 1


def test_stop_waits_for_the_running_nsupdate() -> None:
    """stopService fires when the nsupdate in flight ends (its kill timer bounds that)."""
    rig = Rig()
    rig.moved("web1", "10.0.0.1")
    rig.moved("db1", "10.0.0.2")
    stopped = rig.dns.stopService()
    assert not stopped.called
    rig.reactor.advance(10)
    assert rig.running.signals == ["KILL"]
    rig.running.end(None, 9)
    assert stopped.called
    assert (len(rig.reactor.processes), rig.reactor.getDelayedCalls()) == (1, [])
    assert rig.outcomes()[0][4]["final"] is True


def test_script_is_plain_nsupdate_input() -> None:
    """The script replaces exactly one name and type."""
    from heartbeat.server.dns import DnsUpdate

    update = DnsUpdate("web1", "web1.example.com", "example.com", "AAAA", "::1")
    assert nsupdate_script([update], None, 300) == (
        b"zone example.com\nupdate delete web1.example.com. AAAA\n"
        b"update add web1.example.com. 300 AAAA ::1\nsend\n")


def test_a_dns_label_belongs_to_its_configured_host() -> None:
    """sig1 is configured: SIG1 and sig1.evil (same label) never touch sig1's record,
    whoever speaks first; each refusal is counted as label_taken."""
    rig = Rig(hosts={"sig1": HostConfig(require_signed=True)})
    rig.moved("SIG1", "10.6.6.6")
    rig.moved("sig1.evil", "10.6.6.7")
    assert (rig.reactor.processes, rig.dns.to_json()["skipped"]) == ([], {"label_taken": 2})
    rig.moved("sig1", "10.0.0.1")
    assert rig.running.stdin == script("sig1.dyn.example.com", "dyn.example.com", "A",
                                       "10.0.0.1")
    with pytest.raises(DnsError, match="belongs to host 'sig1'"):
        rig.dns.queue("Sig1", "10.6.6.6")


def test_an_unconfigured_label_is_the_first_hosts_until_it_is_removed() -> None:
    """Among unconfigured hosts the first with a label keeps it (also the one restored
    from the store that was seen first); once removed, the label is free again."""
    earlier = Host("web1.lan", first_seen=100.0)
    later = Host("WEB1", first_seen=200.0)
    rig = Rig(known=(later, earlier))
    assert rig.dns.owner("web1") == "web1.lan"
    rig.moved("WEB1", "10.6.6.6")
    assert (rig.reactor.processes, rig.dns.to_json()["skipped"]) == ([], {"label_taken": 1})
    rig.bus.publish(Event(HOST_REMOVED, "web1.lan", rig.reactor.seconds(), {"by": "admin"}))
    rig.moved("WEB1", "10.0.0.9")
    assert rig.running.stdin == script("web1.dyn.example.com", "dyn.example.com", "A",
                                       "10.0.0.9")


def test_two_configured_hosts_cannot_share_a_label() -> None:
    """With dyndomains, hosts: web1 and WEB1.lan is a config error naming both."""
    with pytest.raises(ConfigError) as caught:
        parse_config(ServerConfig, "dyndomains: [dyn.example.com]\n"
                     "hosts: {web1: {}, WEB1.lan: {}}\n", "hb.yaml")
    assert str(caught.value) == (
        "hb.yaml: hosts.WEB1.lan: its DNS label 'web1' is also hosts.web1's: each record "
        "<label>.<zone> belongs to one host (set dns: false on one of them)")
    parse_config(ServerConfig, "dyndomains: [dyn.example.com]\n"
                 "hosts: {web1: {}, WEB1.lan: {dns: false}}\n", "hb.yaml")


def test_a_follower_updates_nothing_and_queues_what_changed_when_it_leads() -> None:
    """With a shared store only the leader runs nsupdate; a follower notes the hosts whose
    address changed and queues their current address when it becomes the leader."""
    rig = Rig(known=(Host("web1", addr="10.0.0.9"),))

    class Leader:
        leading = False

    rig.dns.leader = Leader()
    rig.moved("web1", "10.0.0.9", old="10.0.0.7")
    assert (rig.reactor.processes, rig.dns.owed) == ([], {"web1"})
    Leader.leading = True
    rig.dns.lead(True)
    assert rig.running.stdin == script("web1.dyn.example.com", "dyn.example.com", "A",
                                       "10.0.0.9")
    assert rig.dns.owed == set()


def test_records_that_wait_go_in_one_nsupdate_one_message_a_zone() -> None:
    """While one nsupdate runs, the records of 150 more hosts in two zones wait: the next
    process sends 100 of them, one update message (one ``send``) a zone, the last the
    rest; each record is reported once."""
    rig = Rig(domains=("dyn.example.com", "example.net"))
    rig.moved("first", "10.0.0.1")
    for n in range(150):
        rig.moved(f"web{n}", f"10.0.1.{n}")
    rig.running.end(0)  # first.dyn.example.com
    batch = rig.running.stdin.decode()
    assert batch.count("update add") == 100
    assert batch.count("send\n") == 2
    # first.example.net waited first: its zone's message comes first
    assert batch.index("zone example.net\n") < batch.index("zone dyn.example.com\n")
    assert "update add web0.dyn.example.com. 60 A 10.0.1.0\n" in batch
    assert rig.dns.to_json()["running_records"] == 100
    rig.running.end(0)
    while rig.dns.current:
        rig.running.end(0)
    updated = [name for kind, name, *_ in rig.outcomes() if kind == "dns.updated"]
    assert sorted(updated) == sorted(
        [f"first.{zone}" for zone in ("dyn.example.com", "example.net")]
        + [f"web{n}.{zone}" for n in range(150) for zone in ("dyn.example.com", "example.net")])
    status = rig.dns.to_json()
    assert (status["runs"], status["queued"]) == (len(rig.reactor.processes), 0)
    assert len(rig.reactor.processes) == 5  # 1 + 100 + 100 + 100 + 1 of 302 records
