"""The agent's sender, driven by a Clock: HTB schedule, ACK/RTT, PLG batching, failures."""

from __future__ import annotations

import errno
import json
import socket
import zlib
from typing import Any

from twisted.internet import defer

from heartbeat.agent.commands import MAX_RUNNING, MAX_WAITING, CommandRunner
from heartbeat.agent.process import KILL_GRACE
from heartbeat.agent.sender import HeartbeatSender
from heartbeat.protocol import decode, encode
from tests.agent_fakes import AgentReactor

V4 = socket.AF_INET
V6 = socket.AF_INET6


def resolver(table: dict[str, list[tuple[int, str]]], calls: list[str] | None = None) -> Any:
    def resolve(host: str, port: int) -> defer.Deferred:
        if calls is not None:
            calls.append(host)
        if host not in table:
            return defer.fail(OSError(f"cannot resolve {host}"))
        return defer.succeed(list(table[host]))
    return resolve


def make(reactor: AgentReactor, table: dict | None = None, **kwargs: Any) -> HeartbeatSender:
    sender = HeartbeatSender(
        kwargs.pop("servers", ["mon"]), 50003, "web1", 30.0, reactor,
        resolve=kwargs.pop("resolve", None) or resolver(
            table if table is not None else {"mon": [(V4, "192.0.2.10")]}),
        **kwargs)
    return sender


def sent(reactor: AgentReactor, family: int = V4) -> list[tuple[dict, str]]:
    return [(decode(data), addr[0]) for data, addr in reactor.ports[family].written]


def test_heartbeat_every_interval_with_seq_ts_interval() -> None:
    """An HTB leaves at start and then every interval, seq counting up, ts from the clock."""
    reactor = AgentReactor()
    reactor.advance(1000)
    sender = make(reactor)
    sender.startService()
    reactor.advance(30)
    reactor.advance(29.9)
    messages = sent(reactor)
    assert messages == [
        ({"ID": "HTB", "interval": 30.0, "seq": 1, "name": "web1", "ts": 1000.0,
          "version": sender_version()}, "192.0.2.10"),
        ({"ID": "HTB", "interval": 30.0, "seq": 2, "name": "web1", "ts": 1030.0,
          "version": sender_version()}, "192.0.2.10"),
    ]
    assert all(addr[1] == 50003 for _, addr in reactor.ports[V4].written)
    sender.stopService()


def sender_version() -> str:
    import heartbeat

    return heartbeat.__version__


def test_ack_sets_rtt_of_next_heartbeat() -> None:
    """The ACK echoing ts gives the RTT in ms, sent in the next HTB to that address."""
    reactor = AgentReactor()
    reactor.advance(500)
    sender = make(reactor)
    sender.startService()
    reactor.advance(0.25)
    sender.datagram_received(encode({"ID": "ACK", "seq": 1, "ts": 500.0, "server_ts": 1.0}),
                             ("192.0.2.10", 50003))
    reactor.advance(29.75)
    second = sent(reactor)[1][0]
    assert (second["seq"], second["rtt"]) == (2, 250.0)
    sender.stopService()


def test_datagrams_from_strangers_are_ignored() -> None:
    """An ACK from an address that is not a server changes nothing."""
    reactor = AgentReactor()
    sender = make(reactor)
    sender.startService()
    sender.datagram_received(encode({"ID": "ACK", "seq": 1, "ts": 0.0}), ("198.51.100.7", 1))
    assert [d.rtt for d in sender.destinations()] == [None]
    sender.stopService()


def test_every_address_of_every_server_gets_each_message() -> None:
    """Servers resolve to all their IPv4 and IPv6 addresses; each gets the HTB."""
    reactor = AgentReactor()
    table = {"a": [(V4, "192.0.2.1"), (V6, "2001:db8::1")], "b": [(V4, "192.0.2.2")]}
    sender = make(reactor, table, servers=["a", "b"])
    sender.startService()
    assert [addr for _, addr in sent(reactor)] == ["192.0.2.1", "192.0.2.2"]
    assert [addr for _, addr in sent(reactor, V6)] == ["2001:db8::1"]
    sender.stopService()


def test_plugin_results_batched_after_delay() -> None:
    """Results queued within batch_delay leave together in one PLG."""
    reactor = AgentReactor()
    sender = make(reactor, batch_delay=1.0)
    sender.startService()
    reactor.ports[V4].written.clear()
    sender.queue_plugin("cpu_monitor", {"cpu_percent": 5.0})
    reactor.advance(0.5)
    sender.queue_plugin("memory_monitor", {"percent": 40.0})
    assert reactor.ports[V4].written == []
    reactor.advance(0.5)
    (message, _), = sent(reactor)
    assert message["ID"] == "PLG"
    assert message["plugins"] == {"cpu_monitor": {"cpu_percent": 5.0},
                                  "memory_monitor": {"percent": 40.0}}
    sender.stopService()


def test_plugin_data_waits_for_a_resolved_server() -> None:
    """Data collected before any address is known is sent after the first resolution."""
    reactor = AgentReactor()
    table: dict[str, list] = {}
    sender = make(reactor, table, batch_delay=0.0)
    sender.startService()
    sender.queue_plugin("os_info", {"system": "Linux"})
    reactor.advance(0)
    assert reactor.ports[V4].written == []
    table["mon"] = [(V4, "192.0.2.10")]
    reactor.advance(30)
    assert [m["ID"] for m, _ in sent(reactor)] == ["HTB", "PLG"]
    sender.stopService()


def test_resolution_failure_retried_every_interval() -> None:
    """A server that does not resolve is looked up again on every heartbeat, forever."""
    reactor = AgentReactor()
    calls: list[str] = []
    sender = make(reactor, resolve=resolver({}, calls))
    sender.startService()
    for _ in range(5):
        reactor.advance(30)
    assert calls == ["mon"] * 6
    sender.stopService()


def test_slow_re_resolution_does_not_hold_back_heartbeats() -> None:
    """While a resolved name's fresh lookup hangs (DNS down), HTBs go on to its old addresses."""
    reactor = AgentReactor()
    lookups: list[defer.Deferred] = []

    def resolve(host: str, port: int) -> defer.Deferred:
        if not lookups:
            lookups.append(defer.succeed([(V4, "192.0.2.10")]))
        else:
            lookups.append(defer.Deferred())
        return lookups[-1]

    sender = make(reactor, resolve=resolve, resolve_interval=60.0)
    sender.startService()
    for _ in range(4):
        reactor.advance(30)
    assert [m["seq"] for m, _ in sent(reactor)] == [1, 2, 3, 4, 5]
    lookups[-1].callback([(V4, "192.0.2.20")])
    reactor.advance(30)
    assert [(m["seq"], ip) for m, ip in sent(reactor)][-1] == (6, "192.0.2.20")
    sender.stopService()


def test_ipv4_send_failures_retry_forever() -> None:
    """An IPv4 address whose sends fail is kept and tried on every interval."""
    reactor = AgentReactor()
    sender = make(reactor)
    sender.startService()
    port = reactor.ports[V4]
    port.fail["192.0.2.10"] = OSError(errno.ENETUNREACH, "Network is unreachable")
    for _ in range(10):
        reactor.advance(30)
    assert [d.ip for d in sender.destinations()] == ["192.0.2.10"]
    del port.fail["192.0.2.10"]
    reactor.advance(30)
    assert sent(reactor)[-1][0]["seq"] == 12
    sender.stopService()


def test_ipv6_that_never_worked_dropped_after_three_failures() -> None:
    """An IPv6 address that never worked is dropped after 3 failures in a row, for good."""
    reactor = AgentReactor()
    table = {"mon": [(V4, "192.0.2.10"), (V6, "2001:db8::10")]}
    sender = make(reactor, table, resolve_interval=60.0)
    reactor.fail["2001:db8::10"] = OSError(errno.ENETUNREACH, "unreachable")
    sender.startService()
    reactor.advance(30)
    assert [d.ip for d in sender.destinations()] == ["192.0.2.10", "2001:db8::10"]
    reactor.advance(30)
    assert [d.ip for d in sender.destinations()] == ["192.0.2.10"]
    for _ in range(4):  # re-resolved twice since: still dropped
        reactor.advance(30)
    assert [d.ip for d in sender.destinations()] == ["192.0.2.10"]
    sender.stopService()


def test_ipv6_drop_counts_heartbeats_not_datagrams() -> None:
    """BOOT, HTB and PLG failing in the same second count once: the drop takes 3 heartbeats."""
    reactor = AgentReactor()
    sender = make(reactor, {"mon": [(V4, "192.0.2.10"), (V6, "2001:db8::10")]}, boot=True,
                  batch_delay=1.0)
    reactor.fail["2001:db8::10"] = OSError(errno.ENETUNREACH, "unreachable")
    sender.queue_plugin("a", {"x": 1})
    sender.queue_plugin("b", {"y": "z" * 2000})
    sender.startService()
    reactor.advance(1)
    reactor.advance(29)
    assert [d.ip for d in sender.destinations()] == ["192.0.2.10", "2001:db8::10"]
    reactor.advance(30)
    assert [d.ip for d in sender.destinations()] == ["192.0.2.10"]
    sender.stopService()


def test_ipv6_that_worked_once_is_kept() -> None:
    """An IPv6 address that worked before is retried like IPv4 when it starts failing."""
    reactor = AgentReactor()
    sender = make(reactor, {"mon": [(V6, "2001:db8::10")]})
    sender.startService()
    reactor.ports[V6].fail["2001:db8::10"] = OSError(errno.ENETUNREACH, "unreachable")
    for _ in range(6):
        reactor.advance(30)
    assert [d.ip for d in sender.destinations()] == ["2001:db8::10"]
    sender.stopService()


def test_no_ipv6_socket_counts_as_failure() -> None:
    """Without an IPv6 socket, IPv6 addresses fail and are dropped; IPv4 carries on."""
    reactor = AgentReactor(ipv6=False)
    sender = make(reactor, {"mon": [(V6, "2001:db8::10"), (V4, "192.0.2.10")]})
    sender.startService()
    reactor.advance(30)
    reactor.advance(30)
    assert [d.ip for d in sender.destinations()] == ["192.0.2.10"]
    assert [m["seq"] for m, _ in sent(reactor)] == [1, 2, 3]
    sender.stopService()


def test_boot_and_shut_with_b() -> None:
    """With boot, BOOT goes before the first HTB and SHUT on stop, to every address."""
    reactor = AgentReactor()
    booted: list[bool] = []
    sender = make(reactor, boot=True, on_boot=lambda: booted.append(True))
    sender.startService()
    reactor.advance(30)
    sender.stopService()
    assert [m["ID"] for m, _ in sent(reactor)] == ["BOOT", "HTB", "HTB", "SHUT"]
    assert booted == [True]


def test_boot_carries_the_host_boot_time() -> None:
    """BOOT tells the server when the host booted, not when the agent started."""
    reactor = AgentReactor()
    sender = make(reactor, boot=True, boot_time=1711234567.0)
    sender.startService()
    sender.stopService()
    assert [(m["ID"], m.get("boot_time")) for m, _ in sent(reactor)] == [
        ("BOOT", 1711234567.0), ("HTB", None), ("SHUT", None)]


def test_stop_flushes_pending_plugin_data() -> None:
    """Queued plugin data is sent when the agent stops, not lost."""
    reactor = AgentReactor()
    sender = make(reactor, batch_delay=5.0)
    sender.startService()
    sender.queue_plugin("cpu_monitor", {"cpu_percent": 1.0})
    sender.stopService()
    assert [m["ID"] for m, _ in sent(reactor)] == ["HTB", "PLG"]
    assert reactor.getDelayedCalls() == []


def runner(reactor: AgentReactor, **kwargs: Any) -> CommandRunner:
    return CommandRunner(reactor, kwargs.pop("allowed", {"uptime": ["/bin/echo", "up"]}),
                         kwargs.pop("update", None), 10.0, 100.0)


def test_allowed_cmd_runs_argv_and_answers_res() -> None:
    """An allow-listed CMD runs its argv plus the server's args and answers RES to the server."""
    reactor = AgentReactor()
    sender = make(reactor, on_request=runner(reactor).handle)
    sender.startService()
    sender.datagram_received(encode({"ID": "CMD", "cmd_id": "c1", "cmd": "uptime",
                                     "args": ["-p"]}), ("192.0.2.10", 50003))
    (process,) = reactor.processes
    assert (process.executable, process.args) == ("/bin/echo", ("/bin/echo", "up", "-p"))
    assert process.stdin_closed
    process.finish(out=b"up 3 days\n")
    res = sent(reactor)[-1][0]
    assert {k: res[k] for k in ("ID", "cmd_id", "rc", "output", "name")} == {
        "ID": "RES", "cmd_id": "c1", "rc": 0, "output": "up 3 days", "name": "web1"}
    sender.stopService()


def test_cmd_not_allowed_is_refused_without_running() -> None:
    """A CMD not in allowed_commands is answered rc 126 and nothing is spawned."""
    reactor = AgentReactor()
    sender = make(reactor, on_request=runner(reactor).handle)
    sender.startService()
    sender.datagram_received(encode({"ID": "CMD", "cmd_id": 7, "cmd": "rm", "args": ["-rf"]}),
                             ("192.0.2.10", 50003))
    assert reactor.processes == []
    res = sent(reactor)[-1][0]
    assert (res["ID"], res["cmd_id"], res["rc"], res["output"]) == (
        "RES", 7, 126, "command 'rm' is not in this host's allowed_commands")
    sender.stopService()


def start_uptime_cmd(reactor: AgentReactor) -> tuple[HeartbeatSender, Any]:
    """A started sender that has just received CMD uptime, and the child it spawned."""
    sender = make(reactor, on_request=runner(reactor).handle)
    sender.startService()
    sender.datagram_received(encode({"ID": "CMD", "cmd_id": "c2", "cmd": "uptime"}),
                             ("192.0.2.10", 50003))
    (process,) = reactor.processes
    return sender, process


def test_cmd_timeout_kills_and_answers_124() -> None:
    """A CMD running past command_timeout is killed and answered rc 124."""
    reactor = AgentReactor()
    sender, process = start_uptime_cmd(reactor)
    reactor.advance(10)
    assert process.signals == ["KILL", "close pipes"]
    process.finish(code=None, signal=9)
    res = sent(reactor)[-1][0]
    assert (res["rc"], res["output"]) == (124, "[timed out, killed: /bin/echo]")
    sender.stopService()


class BusyPoolReactor(AgentReactor):
    """A reactor whose thread pool never gets round to anything."""

    def getThreadPool(self) -> Any:
        class Busy:
            def callInThreadWithCallback(self, *args: Any) -> None:
                pass
        return Busy()


def test_cmd_timeout_kills_the_child_even_when_the_pool_is_busy() -> None:
    """A timed-out child is stopped, and killed KILL_GRACE s later if no thread came free."""
    reactor = BusyPoolReactor()
    sender, process = start_uptime_cmd(reactor)
    process.pid = 4242
    reactor.advance(10)
    stopped = list(process.signals)
    reactor.advance(KILL_GRACE)
    assert (stopped, process.signals) == (["STOP"], ["STOP", "KILL", "close pipes"])
    process.finish(code=None, signal=9)
    assert sent(reactor)[-1][0]["rc"] == 124
    sender.stopService()


def test_cmd_flood_runs_a_few_at_once_and_the_rest_in_turn() -> None:
    """A flood of CMDs forks at most MAX_RUNNING children; the rest wait, beyond that ignored."""
    reactor = AgentReactor()
    sender = make(reactor, on_request=runner(reactor).handle)
    sender.startService()
    flood = MAX_RUNNING + MAX_WAITING + 10
    for i in range(flood):
        sender.datagram_received(encode({"ID": "CMD", "cmd_id": f"c{i}", "cmd": "uptime"}),
                                 ("192.0.2.10", 50003))
    assert len(reactor.processes) == MAX_RUNNING
    for process in list(reactor.processes):
        process.finish(out=b"up\n")
    assert len(reactor.processes) == 2 * MAX_RUNNING
    while len(reactor.processes) < MAX_RUNNING + MAX_WAITING:
        for process in reactor.processes[-MAX_RUNNING:]:
            process.finish(out=b"up\n")
    for process in reactor.processes[-MAX_RUNNING:]:
        process.finish(out=b"up\n")
    answered = [m["cmd_id"] for m, _ in sent(reactor) if m["ID"] == "RES"]
    assert answered == [f"c{i}" for i in range(MAX_RUNNING + MAX_WAITING)]
    sender.datagram_received(encode({"ID": "CMD", "cmd_id": f"c{flood - 1}", "cmd": "uptime"}),
                             ("192.0.2.10", 50003))
    assert len(reactor.processes) == MAX_RUNNING + MAX_WAITING + 1
    sender.stopService()


def test_repeated_cmd_runs_once_and_repeats_its_res() -> None:
    """The server's resends of a CMD do not run it again; a finished one gets its RES again."""
    reactor = AgentReactor()
    sender = make(reactor, on_request=runner(reactor).handle)
    sender.startService()
    cmd = encode({"ID": "CMD", "cmd_id": "c3", "cmd": "uptime"})
    sender.datagram_received(cmd, ("192.0.2.10", 50003))
    sender.datagram_received(cmd, ("192.0.2.10", 50003))
    assert len(reactor.processes) == 1
    reactor.processes[0].finish(out=b"x")
    sender.datagram_received(cmd, ("192.0.2.10", 50003))
    assert len(reactor.processes) == 1
    assert [m["rc"] for m, _ in sent(reactor) if m["ID"] == "RES"] == [0, 0]
    sender.stopService()


def test_upd_runs_update_command_with_version() -> None:
    """UPD runs update_command (a string split, no shell) with HEARTBEAT_VERSION set."""
    reactor = AgentReactor()
    handle = runner(reactor, update="/bin/echo --venv '/opt/hb venv'").handle
    sender = make(reactor, on_request=handle)
    sender.startService()
    sender.datagram_received(encode({"ID": "UPD", "cmd_id": "u1", "version": "0.2.0"}),
                             ("192.0.2.10", 50003))
    (process,) = reactor.processes
    assert process.args == ("/bin/echo", "--venv", "/opt/hb venv")
    assert process.env is not None and process.env["HEARTBEAT_VERSION"] == "0.2.0"
    process.finish(out=b"installed 0.2.0\n", err=b"warning: x\n", code=3)
    res = sent(reactor)[-1][0]
    assert (res["rc"], res["output"]) == (3, "installed 0.2.0\nwarning: x")
    sender.stopService()


def test_upd_without_update_command_is_refused() -> None:
    """UPD with no update_command configured is answered rc 126."""
    reactor = AgentReactor()
    sender = make(reactor, on_request=runner(reactor).handle)
    sender.startService()
    sender.datagram_received(zlib.compress(json.dumps(
        {"ID": "UPD", "cmd_id": "u2"}).encode()), ("192.0.2.10", 50003))
    res = sent(reactor)[-1][0]
    assert (res["rc"], res["output"]) == (126, "no update_command is configured on this host")
    sender.stopService()


def test_decode_reply_server_messages() -> None:
    """The agent's decoder takes ACK, CMD and UPD, plain or zlib, and checks their fields."""
    import pytest

    from heartbeat.protocol import DecodeError, decode_reply

    ack = {"ID": "ACK", "seq": 3, "ts": 1.5, "server_ts": 2.0}
    assert decode_reply(json.dumps(ack).encode()) == ack
    cmd = {"ID": "CMD", "cmd_id": "a-1", "cmd": "uptime", "args": ["-p"]}
    assert decode_reply(zlib.compress(json.dumps(cmd).encode())) == cmd
    assert decode_reply(b'{"ID":"UPD","cmd_id":7}') == {"ID": "UPD", "cmd_id": 7}
    for bad, reason in [(b'{"ID":"HTB","name":"x"}', "bad_id"),
                        (b'{"ID":"CMD","cmd_id":"1","cmd":"x","args":"-rf /"}', "bad_field"),
                        (b'{"ID":"CMD","cmd_id":true,"cmd":"x"}', "bad_field"),
                        (b'{"ID":"ACK","seq":"7"}', "bad_field"),
                        (b"[1]", "bad_format"), (b"", "empty")]:
        with pytest.raises(DecodeError) as e:
            decode_reply(bad)
        assert e.value.reason == reason, bad
