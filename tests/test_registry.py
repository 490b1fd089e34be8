"""The host registry state machine, driven with plain ``now`` values."""

from __future__ import annotations

from typing import Any

import pytest

from heartbeat.config.server import HostConfig
from heartbeat.events import (
    HOST_ADDRESS,
    HOST_BOOT,
    HOST_COMMAND,
    HOST_DOWN,
    HOST_MESSAGE,
    HOST_NEW,
    HOST_PLUGINS,
    HOST_REMOVED,
    HOST_RESULT,
    HOST_UP,
    RECEIVED,
    Event,
    EventBus,
)
from heartbeat.server.registry import (
    ANSWER_BYTES,
    MAX_QUEUED_COMMANDS,
    Host,
    HostState,
    PendingCommand,
    QueueFull,
    Registry,
)
from heartbeat.text import json_bytes

SRC = ("10.0.0.5", 40000)


def htb(name: str = "web1", **fields: Any) -> dict[str, Any]:
    return {"ID": "HTB", "name": name, **fields}


def names(taken: tuple[list[Host], list[Host]]) -> tuple[list[str], list[str]]:
    """The names of :meth:`Registry.take_dirty`'s two lists, sorted."""
    return sorted(h.name for h in taken[0]), sorted(h.name for h in taken[1])


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


@pytest.fixture
def registry() -> Registry:
    return Registry(grace=10, default_interval=30)


class HeartbeatTests:
    def test_first_heartbeat(self, registry: Registry) -> None:
        """First HTB: host is new, gets its address, goes UNKNOWN -> UP and is ACKed."""
        outcome = registry.apply(htb(interval=20, seq=3, ts=99.5), SRC, now=100.0)
        assert outcome.events == [
            Event(HOST_NEW, "web1", 100.0, {}),
            Event(HOST_ADDRESS, "web1", 100.0, {"addr": "10.0.0.5", "old": None}),
            Event(HOST_UP, "web1", 100.0, {"previous": "UNKNOWN", "addr": "10.0.0.5"}),
        ]
        assert outcome.replies == [{"ID": "ACK", "server_ts": 100.0, "seq": 3, "ts": 99.5}]
        host = registry.get("web1")
        assert host is not None
        assert registry.host_json(host) == {
            "name": "web1", "state": "UP", "addr": "10.0.0.5", "port": 40000,
            "last_seen": 100.0, "since": 100.0, "first_seen": 100.0, "interval": 20.0,
            "rtt": None, "version": None, "boot_time": None, "down_reason": None,
            "watch": True, "plugins": [], "pending_commands": 0, "signed": False,
            "key_id": None, "description": "", "tags": [], "latest_message": None,
            "parents": [], "flapping": False, "recovering": None,
        }

    def test_steady_heartbeats_cause_no_events(self, registry: Registry) -> None:
        """Later HTBs from the same address only refresh, an RTT too (RTT alerting reads
        it from the message event); the ACK omits absent seq/ts."""
        registry.apply(htb(), SRC, 100.0)
        assert registry.apply(htb(), SRC, 115.0).events == []
        outcome = registry.apply(htb(rtt=1.5, version="2.0"), SRC, 130.0)
        assert outcome.events == []
        assert outcome.replies == [{"ID": "ACK", "server_ts": 130.0}]
        host = registry.get("web1")
        assert host is not None
        assert (host.last_seen, host.since, host.rtt, host.version) == (130.0, 100.0, 1.5, "2.0")

    def test_address_change_is_an_event(self, registry: Registry) -> None:
        """A heartbeat from a new address publishes old and new address."""
        registry.apply(htb(), SRC, 100.0)
        outcome = registry.apply(htb(), ("10.0.0.9", 40000), 110.0)
        assert outcome.events == [
            Event(HOST_ADDRESS, "web1", 110.0, {"addr": "10.0.0.9", "old": "10.0.0.5"})]


class DownTests:
    def test_down_after_interval_plus_grace(self, registry: Registry) -> None:
        """A host is DOWN only once interval + grace has passed since its last HTB."""
        registry.apply(htb(interval=20), SRC, 100.0)
        assert registry.expire(130.0) == []
        events = registry.expire(130.5)
        assert events == [Event(HOST_DOWN, "web1", 130.5, {
            "reason": "timeout", "previous": "UP", "last_seen": 100.0, "silent_for": 30.5})]
        assert registry.expire(200.0) == []

    def test_default_interval_when_host_sends_none(self, registry: Registry) -> None:
        """Without an interval in the HTB, the configured default applies."""
        registry.apply(htb(), SRC, 100.0)
        assert registry.expire(140.0) == []
        assert kinds(registry.expire(140.1)) == [HOST_DOWN]

    def test_configured_interval_overrides_host(self) -> None:
        """hosts.<name>.interval wins over the interval the host announces."""
        registry = Registry(grace=0, default_interval=30,
                            host_config={"web1": HostConfig(interval=5)})
        registry.apply(htb(interval=300), SRC, 100.0)
        assert kinds(registry.expire(105.1)) == [HOST_DOWN]

    def test_back_up_reports_how_long_it_was_down(self, registry: Registry) -> None:
        """DOWN -> UP carries down_for and the reason it was down (for the notifier)."""
        registry.apply(htb(interval=10), SRC, 100.0)
        registry.expire(121.0)
        outcome = registry.apply(htb(interval=10), SRC, 124.0)
        assert outcome.events == [Event(HOST_UP, "web1", 124.0, {
            "previous": "DOWN", "addr": "10.0.0.5", "down_for": 3.0, "down_reason": "timeout"})]

    def test_shutdown_marks_down_without_expiry(self, registry: Registry) -> None:
        """SHUT marks the host DOWN with reason shutdown; no timeout DOWN follows."""
        registry.apply(htb(), SRC, 100.0)
        outcome = registry.apply({"ID": "SHUT", "name": "web1"}, SRC, 105.0)
        assert outcome.events == [Event(HOST_DOWN, "web1", 105.0,
                                        {"reason": "shutdown", "previous": "UP"})]
        host = registry.get("web1")
        assert host is not None
        assert (host.state, host.down_reason) == (HostState.DOWN, "shutdown")
        assert registry.expire(1000.0) == []
        assert registry.apply({"ID": "SHUT", "name": "web1"}, SRC, 106.0).events == []

    def test_restart_gives_up_hosts_a_fresh_grace(self, registry: Registry) -> None:
        """After a server restart, hosts UP before it are not DOWN until a fresh period passes."""
        registry.apply(htb(interval=10), SRC, 100.0)
        saved = list(registry)
        again = Registry(grace=10, default_interval=30)
        again.restore(saved, now=500.0)
        assert again.expire(519.0) == []
        assert kinds(again.expire(520.5)) == [HOST_DOWN]


class OtherMessageTests:
    def test_boot(self, registry: Registry) -> None:
        """BOOT records the boot time (the message's, else now)."""
        assert registry.apply({"ID": "BOOT", "name": "h", "boot_time": 50.0}, SRC,
                              100.0).events[-1] == Event(HOST_BOOT, "h", 100.0,
                                                         {"boot_time": 50.0, "addr": "10.0.0.5"})
        assert registry.apply({"ID": "BOOT", "name": "h"}, SRC, 101.0).events == [
            Event(HOST_BOOT, "h", 101.0, {"boot_time": 101.0, "addr": "10.0.0.5"})]

    def test_msg(self, registry: Registry) -> None:
        """MSG becomes a host.msg event with its level (info by default)."""
        registry.apply(htb(), SRC, 1.0)
        assert registry.apply({"ID": "MSG", "name": "web1", "text": "hi"}, SRC, 2.0).events == [
            Event(HOST_MESSAGE, "web1", 2.0, {"text": "hi", "level": "info"})]

    def test_plugin_data_is_kept_latest(self, registry: Registry) -> None:
        """PLG records when each plugin last reported and publishes the data (the store
        keeps it; the registry holds none)."""
        registry.apply(htb(), SRC, 1.0)
        plugins = {"cpu_monitor": {"cpu_percent": 3}, "os_info": {"system": "Linux"}}
        assert registry.apply({"ID": "PLG", "name": "web1", "plugins": plugins}, SRC,
                              2.0).events == [Event(HOST_PLUGINS, "web1", 2.0,
                                                    {"plugins": plugins})]
        registry.apply({"ID": "PLG", "name": "web1",
                        "plugins": {"cpu_monitor": {"cpu_percent": 9}}}, SRC, 3.0)
        host = registry.get("web1")
        assert host is not None
        assert {k: s.ts for k, s in host.plugins.items()} == {"cpu_monitor": 3.0,
                                                               "os_info": 2.0}
        assert not hasattr(host.plugins["cpu_monitor"], "data")

    def test_latest_message_is_kept_with_the_host(self, registry: Registry) -> None:
        """MSG, BOOT, SHUT and RES become the host's latest message; HTB and PLG do not."""
        def latest() -> Any:
            host = registry.get("web1")
            assert host is not None
            return registry.host_json(host)["latest_message"]

        registry.apply(htb(), SRC, 1.0)
        assert latest() is None
        registry.apply({"ID": "MSG", "name": "web1", "text": "x" * 600, "level": "warning",
                        "extra": {"big": 1}}, SRC, 2.0)
        assert latest() == {"ts": 2.0, "message": {"ID": "MSG", "text": "x" * 499 + "…",
                                                   "level": "warning"}}
        registry.apply(htb(), SRC, 3.0)
        registry.apply({"ID": "PLG", "name": "web1", "plugins": {}}, SRC, 3.0)
        assert latest()["ts"] == 2.0
        registry.apply({"ID": "RES", "name": "web1", "cmd_id": "a-1", "rc": 0,
                        "output": "ok"}, SRC, 4.0)
        assert latest() == {"ts": 4.0, "message": {"ID": "RES", "cmd_id": "a-1", "rc": 0,
                                                   "output": "ok"}}
        registry.apply({"ID": "SHUT", "name": "web1"}, SRC, 5.0)
        assert latest() == {"ts": 5.0, "message": {"ID": "SHUT"}}

    def test_description_comes_from_the_config(self) -> None:
        """A host's description: in its config is part of its API shape."""
        registry = Registry(grace=10, default_interval=30,
                            host_config={"web1": HostConfig(description="front web server")})
        registry.apply(htb(), SRC, 1.0)
        host = registry.get("web1")
        assert host is not None
        assert registry.host_json(host)["description"] == "front web server"

    def test_unknown_id_changes_nothing(self, registry: Registry) -> None:
        """An unknown ID creates no host and no event."""
        outcome = registry.apply({"ID": "NEW", "name": "web1"}, SRC, 1.0)
        assert (outcome.events, outcome.replies, len(registry)) == ([], [], 0)

    def test_message_before_heartbeat_leaves_host_unknown(self, registry: Registry) -> None:
        """A host first seen by PLG exists but stays UNKNOWN until it heartbeats."""
        outcome = registry.apply({"ID": "PLG", "name": "h", "plugins": {}}, SRC, 1.0)
        assert kinds(outcome.events) == [HOST_NEW, HOST_PLUGINS]
        host = registry.get("h")
        assert host is not None and host.state is HostState.UNKNOWN


class CommandTests:
    def test_command_sent_after_ack_until_result(self, registry: Registry) -> None:
        """A queued CMD follows the ACK on each HTB until the RES arrives."""
        registry.apply(htb(), SRC, 1.0)
        command, event = registry.queue_command(
            "web1", "CMD", {"cmd": "restart_nginx", "args": ["-q"]}, 2.0, by="alice")
        assert event == Event(HOST_COMMAND, "web1", 2.0, {
            "cmd_id": command.cmd_id, "kind": "CMD", "queued": 2.0, "attempts": 0,
            "by": "alice", "cmd": "restart_nginx", "args": ["-q"]})
        for now in (3.0, 4.0):
            replies = registry.apply(htb(), SRC, now).replies
            assert replies[1:] == [{"ID": "CMD", "cmd_id": command.cmd_id,
                                    "cmd": "restart_nginx", "args": ["-q"]}]
        result = registry.apply({"ID": "RES", "name": "web1", "cmd_id": command.cmd_id,
                                 "rc": 0, "output": "ok"}, SRC, 5.0)
        assert result.events == [Event(HOST_RESULT, "web1", 5.0, {
            "cmd_id": command.cmd_id, "status": "done", "rc": 0, "output": "ok",
            "kind": "CMD", "cmd": "restart_nginx", "args": ["-q"]})]
        assert registry.apply(htb(), SRC, 6.0).replies == [{"ID": "ACK", "server_ts": 6.0}]

    def test_command_fails_after_its_resends(self) -> None:
        """Without a RES, a command is sent command_attempts times, then marked failed."""
        registry = Registry(grace=10, default_interval=30, command_attempts=5)
        registry.apply(htb(), SRC, 0.0)
        command, _ = registry.queue_command("web1", "UPD", {"version": "2.0"}, 0.0)
        sent = [len(registry.apply(htb(), SRC, float(t)).replies) - 1 for t in range(1, 7)]
        assert sent == [1, 1, 1, 1, 1, 0]
        host = registry.get("web1")
        assert host is not None and host.pending == {}
        assert host.results[-1] == {
            "ts": 6.0, "cmd_id": command.cmd_id, "status": "failed", "kind": "UPD",
            "attempts": 5, "detail": "no RES after its resends", "version": "2.0"}

    def test_one_datagram_is_answered_with_a_bounded_number_of_bytes(
            self, registry: Registry) -> None:
        """A host's waiting commands go out at most ANSWER_BYTES per heartbeat (at least
        one), oldest first: a forged HTB reflects no more than that."""
        registry.apply(htb(), SRC, 1.0)
        args = ["x" * 1024] * 3  # about 3 KiB a command
        queued = [registry.queue_command("web1", "CMD", {"cmd": f"c{n}", "args": args},
                                         2.0)[0] for n in range(MAX_QUEUED_COMMANDS)]
        with pytest.raises(QueueFull):
            registry.new_command("web1", "CMD", {"cmd": "more", "args": []}, 2.0)
        sent: list[list[str]] = []
        for now in range(3, 11):
            replies = registry.apply(htb(), SRC, float(now)).replies[1:]
            assert 0 < sum(len(json_bytes(r)) for r in replies) <= ANSWER_BYTES
            sent.append([r["cmd_id"] for r in replies])
        first = [queued[0].cmd_id, queued[1].cmd_id]  # the rest wait until these end
        assert sent[:5] == [first] * 5
        assert sent[5] == [queued[2].cmd_id, queued[3].cmd_id]  # those failed after 5 sends

    def test_restored_commands_keep_their_ids_unique(self, registry: Registry) -> None:
        """After a restart in the same second, a new command does not reuse a restored id."""
        host = Host("web1", HostState.UP)
        host.pending["5-3"] = PendingCommand("5-3", "UPD", {}, 5.0)
        registry.restore([host], 5.5)
        command, _ = registry.queue_command("web1", "CMD", {"cmd": "x", "args": []}, 5.9)
        assert list(host.pending) == ["5-3", "5-4"] and command.cmd_id == "5-4"

    def test_a_follower_dispatches_nothing_until_it_takes_over_the_queue(
            self, registry: Registry) -> None:
        """With a shared store only the leader sends CMD/UPD; a new leader takes the queue
        the last one left in the store (same ids: an agent runs each once) and its new
        ids go on past them."""
        registry.apply(htb(), SRC, 1.0)
        registry.dispatching = False
        assert registry.apply(htb(), SRC, 2.0).replies == [{"ID": "ACK", "server_ts": 2.0}]
        stored = {"web1": {"5-7": PendingCommand("5-7", "CMD", {"cmd": "x", "args": []}, 5.0,
                                                 attempts=2)}}
        assert registry.take_over_commands(stored) == 1
        assert registry.apply(htb(), SRC, 6.0).replies[1:] == [
            {"ID": "CMD", "cmd_id": "5-7", "cmd": "x", "args": []}]
        command, _ = registry.queue_command("web1", "CMD", {"cmd": "y", "args": []}, 5.9)
        assert command.cmd_id == "5-8"

    def test_unsolicited_result_is_recorded(self, registry: Registry) -> None:
        """A RES for no known command is still recorded, as unsolicited."""
        outcome = registry.apply({"ID": "RES", "name": "h", "cmd_id": 7, "rc": 1}, SRC, 1.0)
        assert outcome.events[-1].data == {"cmd_id": "7", "status": "unsolicited", "rc": 1,
                                           "output": ""}


class BookkeepingTests:
    def test_dirty_hosts_are_taken_once(self, registry: Registry) -> None:
        """Changed hosts are handed to the store once per change."""
        registry.apply(htb("a"), SRC, 1.0)
        registry.apply(htb("b"), SRC, 1.0)
        assert names(registry.take_dirty()) == (["a", "b"], [])
        assert registry.take_dirty() == ([], [])
        registry.expire(100.0)
        assert names(registry.take_dirty()) == (["a", "b"], [])

    def test_a_steady_heartbeat_is_taken_as_a_beat(self, registry: Registry) -> None:
        """A heartbeat that moves only :data:`BEAT_FIELDS` (the store writes those alone)
        is a beat; one that changes anything else, or comes with another change, is not."""
        for name in "abcdef":
            registry.apply(htb(name, version="1"), SRC, 1.0)
        registry.take_dirty()
        registry.apply(htb("a", version="1", interval=5, rtt=0.1), ("10.0.0.5", 40001), 2.0)
        registry.apply(htb("b", version="1"), ("10.0.0.6", 40000), 2.0)  # address
        registry.apply(htb("c", version="2"), SRC, 2.0)  # version
        registry.apply(htb("d", version="1"), SRC, 2.0)
        registry.apply({"ID": "MSG", "name": "d", "text": "hi"}, SRC, 2.0)  # and a message
        registry.apply(htb("e"), SRC, 2.0)  # no version: unchanged
        assert names(registry.take_dirty()) == (["b", "c", "d"], ["a", "e"])
        registry.expire(100.0)
        registry.take_dirty()
        registry.apply(htb("a", version="1"), SRC, 101.0)  # DOWN -> UP
        assert names(registry.take_dirty()) == (["a"], [])
        registry.apply(htb("f", version="1"), SRC, 101.0)
        registry.remove("f", 102.0)
        assert names(registry.take_dirty()) == ([], [])

    def test_remove(self, registry: Registry) -> None:
        """A removed host is forgotten and comes back as new."""
        registry.apply(htb(), SRC, 1.0)
        assert registry.remove("web1", 2.0, by="alice") == Event(
            HOST_REMOVED, "web1", 2.0, {"by": "alice"})
        assert registry.remove("web1", 2.0) is None
        assert kinds(registry.apply(htb(), SRC, 3.0).events)[0] == HOST_NEW

    def test_counts(self, registry: Registry) -> None:
        """Hosts are counted by state."""
        registry.apply(htb("a"), SRC, 1.0)
        registry.apply({"ID": "MSG", "name": "b", "text": "x"}, SRC, 1.0)
        registry.apply({"ID": "SHUT", "name": "c"}, SRC, 1.0)
        assert registry.counts() == {"UP": 1, "UNKNOWN": 1, "DOWN": 1, "UNREACHABLE": 0}

    def test_restore_keeps_down_hosts_down(self) -> None:
        """Restored DOWN hosts keep their state and since."""
        registry = Registry(grace=1, default_interval=1)
        registry.restore([Host("x", HostState.DOWN, since=5.0, down_reason="timeout")], 10.0)
        host = registry.get("x")
        assert host is not None and (host.state, host.since) == (HostState.DOWN, 5.0)


class EventBusTests:
    def test_delivery_by_kind_in_order(self) -> None:
        """Subscribers get the kinds they asked for, in publish order; wildcards get all."""
        seen: list[tuple[str, str]] = []
        bus = EventBus(on_error=lambda s, e, x: None)
        bus.subscribe(lambda e: seen.append(("up", e.kind)), [HOST_UP])
        bus.subscribe(lambda e: seen.append(("all", e.kind)))
        bus.publish_all([Event(HOST_UP, "h", 1.0), Event(HOST_DOWN, "h", 2.0)])
        assert seen == [("up", HOST_UP), ("all", HOST_UP), ("all", HOST_DOWN)]

    def test_failing_subscriber_does_not_stop_others(self) -> None:
        """A subscriber that raises is reported and the next one still gets the event."""
        errors: list[str] = []
        got: list[Event] = []

        def broken(event: Event) -> None:
            raise RuntimeError("boom")

        bus = EventBus(on_error=lambda s, e, x: errors.append(f"{e.kind}: {x}"))
        bus.subscribe(broken, [HOST_UP])
        bus.subscribe(got.append, [HOST_UP])
        event = Event(HOST_UP, "h", 1.0)
        bus.publish(event)
        assert (errors, got) == (["host.up: boom"], [event])

    def test_publish_during_delivery_waits_for_the_others(self) -> None:
        """An event published by a subscriber is delivered after every subscriber has had
        the one that caused it (breadth-first), and never inside another delivery."""
        seen: list[tuple[str, str]] = []
        bus = EventBus(on_error=lambda s, e, x: None)

        def alerting(event: Event) -> None:
            seen.append(("alerting", event.kind))
            if event.kind == HOST_PLUGINS:
                bus.publish(Event("alert", event.host, event.ts))

        bus.subscribe(alerting, [HOST_PLUGINS])
        bus.subscribe(lambda e: seen.append(("journal", e.kind)), exclude=[HOST_UP])
        bus.publish_all([Event(HOST_PLUGINS, "h", 1.0), Event(HOST_UP, "h", 1.0)])
        assert seen == [("alerting", HOST_PLUGINS), ("journal", HOST_PLUGINS),
                        ("journal", "alert")]

    def test_raising_error_handler_leaves_the_bus_usable(self) -> None:
        """When on_error itself raises (a test's bus), the queue is dropped, not left stuck."""
        got: list[str] = []

        def broken(event: Event) -> None:
            bus.publish(Event(HOST_DOWN, "h", 2.0))
            raise RuntimeError("boom")

        def reraise(s: object, e: Event, error: BaseException) -> None:
            raise error

        bus = EventBus(on_error=reraise)
        bus.subscribe(broken, [HOST_UP])
        bus.subscribe(lambda e: got.append(e.kind), [HOST_DOWN, HOST_NEW])
        with pytest.raises(RuntimeError):
            bus.publish(Event(HOST_UP, "h", 1.0))
        bus.publish(Event(HOST_NEW, "h", 3.0))
        assert got == [HOST_NEW]

    def test_message_events_are_routed_by_id(self) -> None:
        """A subscriber naming IDs hears only the message events of those IDs, in the order
        of subscription among the rest; an ID none names, or a message event without a
        message, reaches only the subscribers naming none; unsubscribing re-routes."""
        seen: list[tuple[str, str]] = []
        bus = EventBus(on_error=lambda s, e, x: None)
        bus.subscribe(lambda e: seen.append(("all", e.host)))
        plugins = lambda e: seen.append(("plg", e.host))  # noqa: E731
        bus.subscribe(plugins, [RECEIVED], ids=["PLG"])
        bus.subscribe(lambda e: seen.append(("msg", e.host)), [RECEIVED])
        bus.subscribe(lambda e: seen.append(("two", e.host)), [RECEIVED], ids=("PLG", "JOB"))

        def message(message_id: object, host: str) -> Event:
            return Event(RECEIVED, host, 1.0, {"message": {"ID": message_id, "name": host}})

        bus.publish_all([message("PLG", "p"), message("HTB", "h"), message("JOB", "j"),
                         message(["PLG"], "odd"), Event(RECEIVED, "bare", 1.0),
                         Event(HOST_UP, "u", 1.0)])
        assert seen == [("all", "p"), ("plg", "p"), ("msg", "p"), ("two", "p"),
                        ("all", "h"), ("msg", "h"),
                        ("all", "j"), ("msg", "j"), ("two", "j"),
                        ("all", "odd"), ("msg", "odd"), ("all", "bare"), ("msg", "bare"),
                        ("all", "u")]
        assert bus.subscribers(RECEIVED, "PLG")[1] is plugins
        bus.unsubscribe(plugins)
        seen.clear()
        bus.publish(message("PLG", "p"))
        assert seen == [("all", "p"), ("msg", "p"), ("two", "p")]

    def test_ids_narrow_message_events_alone(self) -> None:
        """IDs with any kind but ``message`` are a mistake of the table, refused at once."""
        bus = EventBus(on_error=lambda s, e, x: None)
        for kinds in (None, [HOST_UP], [RECEIVED, HOST_UP]):
            with pytest.raises(ValueError, match="ids narrow"):
                bus.subscribe(lambda e: None, kinds, ids=["PLG"])
        assert bus.subscribers(RECEIVED, "PLG") == []

    def test_unsubscribe(self) -> None:
        """An unsubscribed callable gets nothing more."""
        got: list[Event] = []
        bus = EventBus(on_error=lambda s, e, x: None)
        bus.subscribe(got.append)
        bus.unsubscribe(got.append)
        bus.publish(Event(HOST_UP, "h", 1.0))
        assert got == []

    def test_event_bytes_splice_raw_text(self) -> None:
        """to_bytes reuses a message's raw text verbatim and equals to_json otherwise."""
        import json

        raw = b'{"ID": "HTB",  "name": "h"}'
        event = Event("message", "h", 1.0, {"message": {"ID": "HTB", "name": "h"},
                                            "source_ip": "::1"}, raw)
        data = event.to_bytes()
        assert raw in data
        assert json.loads(data) == event.to_json()
        plain = Event(HOST_UP, "h", 1.0, {"previous": "DOWN"})
        assert json.loads(plain.to_bytes()) == plain.to_json()
