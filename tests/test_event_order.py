"""Causal event order (hypothesis): random datagram sequences through ingest, the registry,
alerting and the bus; every subscriber sees events in the order they were caused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from heartbeat.config.server import ServerConfig
from heartbeat.events import ALERT, HOST_NEW, HOST_PLUGINS, HOST_REMOVED, RECEIVED, Event, EventBus
from heartbeat.protocol import Limits
from heartbeat.server.alerting import AlertingService
from heartbeat.server.ingest import IngestProtocol, IngestStats
from heartbeat.server.limits import HostAdmission
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import StoreService, open_database
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook

HOSTS = ("h0", "h1", "h2", "h3")
RULES = {"cpu_monitor": {"cpu_percent": {"warning": 50.0, "critical": 90.0}},
         "rtt": {name: {"warning": 100.0, "critical": 500.0} for name in HOSTS}}


class Probe:
    """A subscriber that records what it hears and checks that no delivery nests in another."""

    active: list[str] = []

    def __init__(self, name: str, bus: EventBus, publish: Event | None = None,
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
    """Ingest and alerting on one bus, with probes before, between and after them."""

    def __init__(self, path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.errors: list[tuple[str, str]] = []
        self.bus = EventBus(on_error=lambda s, e, x: self.errors.append((e.kind, str(x))))
        self.first = Probe("first", self.bus, publish=Event("probe.derived", "", 0.0))
        self.broken = Probe("broken", self.bus, fail=True)
        self.alerts_only = Probe("alerts", self.bus)
        self.last = Probe("last", self.bus)
        self.bus.subscribe(self.first)
        self.bus.subscribe(self.broken)
        self.registry = Registry(grace=5.0, default_interval=10.0,
                                 admission=HostAdmission(per_hour=3, ceiling=3), max_plugins=2)
        conn = open_database(path)
        self.store = StoreService(conn, ImmediateWorker(), self.clock)
        engine = ThresholdEngine(RuleBook.from_config(ServerConfig(thresholds=RULES), "t.yaml"))
        self.alerting = AlertingService(engine, self.bus, self.store, self.clock)
        self.alerting.attach()
        self.bus.subscribe(self.alerts_only, [ALERT])
        self.bus.subscribe(self.last)
        self.ingest = IngestProtocol(self.registry, self.bus, self.clock, Limits(), IngestStats())
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
            self.bus.publish_all(self.registry.expire(self.clock.seconds()))
        else:
            removed = self.registry.remove(value, self.clock.seconds())
            if removed is not None:
                self.bus.publish(removed)


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


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_every_subscriber_sees_causal_order(tmp_path: Path, sequence: list[Any]) -> None:
    """Whatever the datagrams, all subscribers hear the same events in causal order, never
    nested, and a subscriber that raises stops no other."""
    rig = Rig(tmp_path / f"{len(list(tmp_path.iterdir()))}.sqlite3")
    for step in sequence:
        rig.run(step)
    probes = (rig.first, rig.broken, rig.alerts_only, rig.last)
    assert [p.nested for p in probes] == [[], [], [], []]
    assert rig.first.seen == rig.broken.seen == rig.last.seen
    assert rig.alerts_only.seen == [e for e in rig.last.seen if e.kind == ALERT]
    _check_causal_order(rig.last.seen, rig.batches)
    derived = [e for e in rig.last.seen if e.kind == "probe.derived"]
    assert len(derived) == sum(e.kind == HOST_NEW for e in rig.last.seen)
    assert {kind for kind, _ in rig.errors} <= {e.kind for e in rig.last.seen}
    assert len(rig.errors) == len(rig.last.seen)
    rig.store.conn.close()


def test_alert_waits_for_every_subscriber_of_its_cause(tmp_path: Path) -> None:
    """A PLG's host.plugins reaches every subscriber, even those after alerting, before the
    alert it caused; a new host's host.new comes before an RTT alert about it."""
    rig = Rig(tmp_path / "s.sqlite3")
    rig.run(("datagram", {"ID": "HTB", "name": "h0", "rtt": 700}))
    rig.run(("datagram", {"ID": "PLG", "name": "h0",
                          "plugins": {"cpu_monitor": {"cpu_percent": 95}}}))
    assert [(e.kind, e.data.get("metric_path")) for e in rig.last.seen] == [
        (RECEIVED, None), (HOST_NEW, None), ("host.address", None), ("host.up", None),
        ("host.rtt", None), ("probe.derived", None), (ALERT, "rtt.h0"),
        (RECEIVED, None), (HOST_PLUGINS, None), (ALERT, "cpu_monitor.cpu_percent")]
    rig.store.conn.close()
