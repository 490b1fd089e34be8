"""AlertingService with a Clock: bus in, ALERT events out, states in the store."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from heartbeat.config.server import ServerConfig
from heartbeat.events import ALERT, HOST_PLUGINS, HOST_REMOVED, RECEIVED, Event, EventBus
from heartbeat.server.alerting import AlertingService, load_alert_states, reminder_period
from heartbeat.server.compose import wire
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import StoreService, open_sqlite
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook

RULES = {"cpu_monitor": {"cpu_percent": {"warning": 80.0, "critical": 90.0,
                                         "hysteresis": 0.1}},
         "rtt": {"web": {"warning": 100.0, "critical": 500.0}}}


class Rig:
    """One alerting service over a real SQLite store, a bus and a Clock."""

    def __init__(self, path: Path, watched: set[str] | None = None,
                 renotify: float = 3600.0) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.errors: list[BaseException] = []
        self.bus = EventBus(on_error=lambda s, e, error: self.errors.append(error))
        self.alerts: list[Event] = []
        self.bus.subscribe(self.alerts.append, [ALERT])
        self.registry = Registry(grace=10.0, default_interval=30.0)
        self.backend = open_sqlite(path)
        self.store = StoreService(self.backend, ImmediateWorker(), self.clock, 0.5)
        config = ServerConfig(thresholds=RULES, threshold_renotify_interval=renotify)
        self.engine = ThresholdEngine(RuleBook.from_config(config, "test.yaml"))
        self.engine.restore(self.store.load(load_alert_states))
        self.service = AlertingService(
            self.engine, self.bus, self.store, self.clock,
            watched=(lambda host: host in watched) if watched is not None else lambda h: True,
            period=reminder_period(renotify))
        wire(self.bus, alerting=self.service)
        self.store.startService()
        self.service.startService()

    def stop(self) -> None:
        self.service.stopService()
        self.store.stopService()

    def plugins(self, host: str, plugins: dict[str, Any]) -> None:
        self.bus.publish(Event(HOST_PLUGINS, host, self.clock.seconds(), {"plugins": plugins}))

    def cpu(self, host: str, value: float) -> None:
        self.plugins(host, {"cpu_monitor": {"cpu_percent": value}})

    def heartbeat(self, host: str, rtt: float | None) -> None:
        """An HTB through the registry, on the bus as ingest puts it: the message first
        (alerting reads its rtt), then what the registry made of it."""
        message: dict[str, Any] = {"ID": "HTB", "name": host, "interval": 30}
        if rtt is not None:
            message["rtt"] = rtt
        now = self.clock.seconds()
        outcome = self.registry.apply(message, ("127.0.0.1", 1), now)
        self.bus.publish_all([Event(RECEIVED, host, now, {"message": message}),
                              *outcome.events])

    def stored(self) -> list[tuple[str, str, str, Any, float | None]]:
        return sorted((s.host, s.metric_path, s.level.value, s.value, s.last_notified)
                      for s in self.store.load(load_alert_states))

    def seen(self) -> list[tuple[str, str, str, str, bool, bool]]:
        return [(e.host, e.data["metric_path"], e.data["previous"], e.data["level"],
                 e.data["notify"], e.data["reminder"]) for e in self.alerts]


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    rigs: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rigs.append(Rig(tmp_path / "state.sqlite3", **kwargs))
        return rigs[-1]

    yield make
    for r in rigs:
        if r.service.running:
            r.stop()


def test_plugin_samples_become_alert_events(rig: Any) -> None:
    """HOST_PLUGINS events drive WARNING, CRITICAL, de-escalation and recovery on the bus."""
    r = rig()
    for value in (50.0, 85.0, 95.0, 85.0, 75.0, 50.0):
        r.cpu("db", value)
        r.clock.advance(1)
    path = "cpu_monitor.cpu_percent"
    assert r.seen() == [("db", path, "OK", "WARNING", True, False),
                        ("db", path, "WARNING", "CRITICAL", True, False),
                        ("db", path, "CRITICAL", "WARNING", False, False),
                        ("db", path, "WARNING", "OK", True, False)]
    assert r.alerts[0].to_json() == {
        "type": "alert", "host": "db", "ts": 1001.0, "metric_path": path, "level": "WARNING",
        "previous": "OK", "value": 85.0, "threshold_value": 80.0, "operator": ">",
        "message": "WARNING: db - cpu_monitor.cpu_percent = 85.0", "display": "",
        "since": 1001.0, "notify": True, "reminder": False, "cleared": False,
        "flapping": False}
    assert r.errors == []


def test_rtt_checked_on_every_heartbeat(rig: Any) -> None:
    """An HTB's rtt is checked against thresholds.rtt.<host>; an HTB without rtt is not."""
    r = rig()
    r.heartbeat("web", 125.3)
    r.heartbeat("web", None)
    r.heartbeat("web", 45.2)
    r.heartbeat("other", 9999.0)
    assert [e.data["message"] for e in r.alerts] == [
        "WARNING: web - rtt.web = 125.3", "RECOVERED: web - rtt.web = 45.2 (WARNING -> OK)"]


def test_event_data_is_left_alone(rig: Any) -> None:
    """The shared plugin data of the event is not changed by the evaluation."""
    r = rig()
    plugins = {"zfs_monitor": {"pools": {"tank": {"health": "DEGRADED"}}}}
    before = copy.deepcopy(plugins)
    r.plugins("nas", plugins)
    assert plugins == before
    assert [e.data["metric_path"] for e in r.alerts] == ["zfs_monitor.pools.tank.health_ok"]


def test_states_are_stored_and_removed(rig: Any) -> None:
    """Every state change reaches the store at the next flush; recovery deletes the row."""
    r = rig()
    r.cpu("db", 95.0)
    r.heartbeat("web", 600.0)
    assert r.stored() == []
    r.clock.advance(0.5)
    assert r.stored() == [("db", "cpu_monitor.cpu_percent", "CRITICAL", 95.0, 1000.0),
                          ("web", "rtt.web", "CRITICAL", 600.0, 1000.0)]
    r.cpu("db", 10.0)
    r.clock.advance(0.5)
    assert r.stored() == [("web", "rtt.web", "CRITICAL", 600.0, 1000.0)]


def test_restart_keeps_states_without_notifying(rig: Any) -> None:
    """A new service on the same store restores the alert and stays quiet on the same level."""
    first = rig()
    first.cpu("db", 95.0)
    first.stop()
    second = rig()
    assert [s.to_json() for s in second.engine.states()] == [{
        "host": "db", "metric_path": "cpu_monitor.cpu_percent", "level": "CRITICAL",
        "value": 95.0, "threshold_value": 90.0,
        "message": "CRITICAL: db - cpu_monitor.cpu_percent = 95.0", "since": 1000.0,
        "last_notified": 1000.0, "flapping": False,
             "recovering": None}]
    second.cpu("db", 97.0)
    assert second.alerts == []
    second.cpu("db", 10.0)
    assert second.seen() == [("db", "cpu_monitor.cpu_percent", "CRITICAL", "OK", True, False)]


def test_reminders_on_the_timer(rig: Any) -> None:
    """The timer publishes a REMINDER once per renotify interval while the alert lasts."""
    r = rig(renotify=60.0)
    r.cpu("db", 95.0)
    r.clock.pump([15.0] * 4)
    assert [e.data["message"] for e in r.alerts[1:]] == [
        "REMINDER (CRITICAL): db - cpu_monitor.cpu_percent = 95.0 (ongoing for 60s)"]
    r.clock.pump([15.0] * 4)
    assert len(r.alerts) == 3
    assert r.alerts[2].data["reminder"] is True
    r.clock.advance(0.5)
    assert r.stored() == [("db", "cpu_monitor.cpu_percent", "CRITICAL", 95.0, 1120.0)]
    assert r.service.to_json() == {"active": {"CRITICAL": 1, "WARNING": 0, "UNKNOWN": 0},
                                   "published": 3, "reminders": 2}


def test_unwatched_hosts_keep_states_but_never_notify(rig: Any) -> None:
    """watch: false -> ALERT events carry notify false, reminders are not sent at all."""
    r = rig(watched={"web"}, renotify=60.0)
    r.cpu("lab", 85.0)
    r.cpu("lab", 95.0)
    r.clock.pump([15.0] * 8)
    assert r.seen() == [("lab", "cpu_monitor.cpu_percent", "OK", "WARNING", False, False),
                        ("lab", "cpu_monitor.cpu_percent", "WARNING", "CRITICAL", False, False)]
    assert [s.host for s in r.engine.states()] == ["lab"]


def test_removed_host_states_are_deleted(rig: Any) -> None:
    """HOST_REMOVED drops the host's alerts from memory and from the store."""
    r = rig()
    r.cpu("db", 95.0)
    r.clock.advance(0.5)
    r.bus.publish(Event(HOST_REMOVED, "db", r.clock.seconds(), {"by": None}))
    r.clock.advance(0.5)
    assert (r.engine.states(), r.stored()) == ([], [])


def test_a_failing_reminder_tick_does_not_stop_the_timer(rig: Any, monkeypatch: Any) -> None:
    """A tick that raises is logged; the next tick runs."""
    r = rig(renotify=60.0)
    r.cpu("db", 95.0)
    calls: list[float] = []
    real = r.engine.reminders

    def flaky(now: float) -> Any:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(now)

    monkeypatch.setattr(r.engine, "reminders", flaky)
    r.clock.pump([15.0] * 4)
    assert len(calls) == 4
    assert [e.data["reminder"] for e in r.alerts] == [False, True]
    assert [timer.running for timer in r.service._timers] == [True]


def test_stop_leaves_no_timer(rig: Any) -> None:
    """stopService stops the reminder timer: nothing of it is left on the clock."""
    r = rig()
    scheduled = len(r.clock.getDelayedCalls())
    r.service.stopService()
    assert [timer.running for timer in r.service._timers] == [False]
    assert len(r.clock.getDelayedCalls()) == scheduled - 1


@pytest.mark.parametrize(("interval", "period"), [
    (3600.0, 10.0), (20.0, 5.0), (1.0, 0.25), (0.0, 10.0), (0.01, 0.05)])
def test_reminder_period(interval: float, period: float) -> None:
    """Reminders are looked for at most 10 s apart, often enough for short intervals."""
    assert reminder_period(interval) == period
