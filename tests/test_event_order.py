"""Causal event order (hypothesis): random datagram sequences through the composed server
(ingest, registry, alerting, journal, every subscriber of the table); every subscriber
sees events in the order they were caused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from heartbeat import events
from heartbeat.config.server import ServerConfig
from heartbeat.events import ALERT, HOST_NEW, HOST_PLUGINS, HOST_REMOVED, RECEIVED, Event
from heartbeat.server.compose import Seams, build
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.settings import ServerSettings

HOSTS = ("h0", "h1", "h2", "h3")
RULES = {"cpu_monitor": {"cpu_percent": {"warning": 50.0, "critical": 90.0}},
         "rtt": {name: {"warning": 100.0, "critical": 500.0} for name in HOSTS}}


class Probe:
    """A subscriber that records what it hears and checks that no delivery nests in another."""

    active: list[str] = []

    def __init__(self, name: str, bus: events.EventBus, publish: Event | None = None,
                 fail: bool = False) -> None:
        self.name = name
        self.bus = bus
        self.seen: list[Event] = []
        self.nested: list[str] = []
        self.publish = publish
        self.fail = fail

    def __call__(self, event: Event) -> None:
        if Probe.active:
            self.nested.append(f"{self.name} called inside {Probe.active}")
        Probe.active.append(self.name)
        try:
            self.seen.append(event)
            if self.publish is not None and event.kind == HOST_NEW:
                self.bus.publish(Event(self.publish.kind, event.host, event.ts))
            if self.fail:
                raise RuntimeError("a broken subscriber")
        finally:
            Probe.active.pop()


class Rig:
    """The composed server (compose.build, every part subscribed by the table) on a Clock,
    with probes after the table: one that raises, one that publishes, and recorders."""

    def __init__(self, directory: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.errors: list[tuple[str, str]] = []
        config = ServerConfig(state_dir=str(directory), journal_dir=str(directory),
                              thresholds=RULES, grace=5.0, interval=10.0, max_hosts=3,
                              max_unconfigured_hosts=3, max_plugins=2)
        self.server = build(ServerSettings.from_config(config), self.clock, seams=Seams(
            worker=lambda name: ImmediateWorker(),
            on_error=lambda s, e, x: self.errors.append((e.kind, str(x)))))
        self.bus = self.server.bus
        self.registry = self.server.registry
        self.broken = Probe("broken", self.bus, fail=True)
        self.deriving = Probe("deriving", self.bus, publish=Event("probe.derived", "", 0.0))
        self.alerts_only = Probe("alerts", self.bus)
        self.last = Probe("last", self.bus)
        self.bus.subscribe(self.broken)
        self.bus.subscribe(self.deriving)
        self.bus.subscribe(self.alerts_only, [ALERT])
        self.bus.subscribe(self.last)
        self.ingest = self.server.ingest
        self.ingest.makeConnection(FakeDatagramTransport())
        self.batches: list[int] = []

    def run(self, step: tuple[str, Any]) -> None:
        """One datagram, one expiry check or one removal: one delivery, a batch of events."""
        self.batches.append(len(self.last.seen))
        action, value = step
        if action == "datagram":
            self.ingest.datagramReceived(json.dumps(value).encode(), ("192.0.2.1", 5000))
        elif action == "expire":
            self.clock.advance(value)
            self.server.monitor.check()
        else:
            removed = self.registry.remove(value, self.clock.seconds())
            if removed is not None:
                self.bus.publish(removed)

    def journaled(self) -> list[tuple[str, str]]:
        """(kind, host) of every journal line, in the file's order."""
        journal = self.server.journal
        assert journal is not None
        journal.flush()
        lines = [json.loads(line) for line in journal.journal.path.read_bytes().splitlines()]
        return [("message", e["message"]["name"]) if "message" in e
                else (e["event"]["type"], e["event"]["host"]) for e in lines]

    def close(self) -> None:
        journal = self.server.journal
        assert journal is not None
        journal.journal.close()
        self.server.store.backend.close()


names = st.sampled_from(HOSTS)
numbers = st.one_of(st.integers(0, 1000), st.floats(0, 1000, allow_nan=False))
messages = st.one_of(
    st.fixed_dictionaries({"ID": st.just("HTB"), "name": names},
                          optional={"rtt": numbers, "interval": st.integers(1, 30)}),
    st.fixed_dictionaries({"ID": st.just("PLG"), "name": names, "plugins": st.dictionaries(
        st.sampled_from(("cpu_monitor", "a", "b")),
        st.fixed_dictionaries({"cpu_percent": numbers}), max_size=3)}),
    st.fixed_dictionaries({"ID": st.sampled_from(("BOOT", "SHUT")), "name": names}),
    st.fixed_dictionaries({"ID": st.just("MSG"), "name": names, "text": st.just("hello")}),
    st.fixed_dictionaries({"ID": st.just("RES"), "name": names, "cmd_id": st.just("1-1"),
                           "rc": st.just(0)}),
)
steps = st.lists(st.one_of(
    st.tuples(st.just("datagram"), messages),
    st.tuples(st.just("expire"), st.floats(0.1, 40.0)),
    st.tuples(st.just("remove"), names),
), max_size=40)


def _check_causal_order(events: list[Event], batches: list[int]) -> None:
    """host.new first for a host (after the message that made it), alerts after the events of
    the datagram that caused them, an alert about metrics after the host.plugins it read."""
    known: set[str] = set()
    alerted_in_batch = False
    plugins_seen: set[str] = set()
    starts = set(batches)
    for n, event in enumerate(events):
        if n in starts:
            alerted_in_batch = False
        if event.kind == ALERT:
            alerted_in_batch = True
            assert event.host in known, f"alert about {event.host} before its host.new"
            if event.data["metric_path"].startswith("cpu_monitor."):
                assert event.host in plugins_seen, "a plugin alert before its host.plugins"
            continue
        if event.kind.startswith("host."):
            assert not alerted_in_batch, f"{event.kind} after an alert it did not cause"
        if event.kind == HOST_NEW:
            assert event.host not in known
            known.add(event.host)
        elif event.kind == HOST_REMOVED:
            known.discard(event.host)
            plugins_seen.discard(event.host)
        elif event.kind.startswith("host."):
            assert event.host in known, f"{event.kind} about {event.host} before its host.new"
            if event.kind == HOST_PLUGINS:
                plugins_seen.add(event.host)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_every_subscriber_sees_causal_order(tmp_path: Path, sequence: list[Any]) -> None:
    """Whatever the datagrams, all subscribers hear the same events in causal order, never
    nested, and a subscriber that raises stops no other."""
    rig = Rig(tmp_path / str(len(list(tmp_path.iterdir()))))
    for step in sequence:
        rig.run(step)
    probes = (rig.broken, rig.deriving, rig.alerts_only, rig.last)
    assert [p.nested for p in probes] == [[], [], [], []]
    assert rig.broken.seen == rig.deriving.seen == rig.last.seen
    assert rig.alerts_only.seen == [e for e in rig.last.seen if e.kind == ALERT]
    _check_causal_order(rig.last.seen, rig.batches)
    derived = [e for e in rig.last.seen if e.kind == "probe.derived"]
    assert len(derived) == sum(e.kind == HOST_NEW for e in rig.last.seen)
    assert rig.errors == [(e.kind, "a broken subscriber") for e in rig.last.seen]
    assert rig.journaled() == [(e.kind, e.host) for e in rig.last.seen
                               if e.kind != HOST_PLUGINS]
    rig.close()


def test_alert_waits_for_every_subscriber_of_its_cause(tmp_path: Path) -> None:
    """A PLG's host.plugins reaches every subscriber, even those after alerting, before the
    alert it caused; an RTT alert, caused by the heartbeat's message, comes after what the
    registry made of that message (host.new first) and before what those events caused."""
    rig = Rig(tmp_path)
    rig.run(("datagram", {"ID": "HTB", "name": "h0", "rtt": 700}))
    rig.run(("datagram", {"ID": "PLG", "name": "h0",
                          "plugins": {"cpu_monitor": {"cpu_percent": 95}}}))
    assert [(e.kind, e.data.get("metric_path")) for e in rig.last.seen] == [
        (RECEIVED, None), (HOST_NEW, None), ("host.address", None), ("host.up", None),
        (ALERT, "rtt.h0"), ("probe.derived", None),
        (RECEIVED, None), (HOST_PLUGINS, None), (ALERT, "cpu_monitor.cpu_percent")]
    rig.close()
