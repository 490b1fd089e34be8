"""The notifier asks the operations' one Suppression before it sends: the real registry,
flap detector, operations service, cron jobs, store and notifier on one bus wired by the
composition root's table, with a Clock; only the channel is a recorder (docs/OPERATIONS.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from heartbeat.config.loader import parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.events import HOST_PLUGINS, Event, EventBus
from heartbeat.server.acks import HOST as HOST_TARGET
from heartbeat.server.acks import AckBook
from heartbeat.server.alerting import AlertingService, reminder_period
from heartbeat.server.compose import make_flaps, make_registry, wire
from heartbeat.server.jobs import JobSpec, Period
from heartbeat.server.jobservice import JobService, load_jobs
from heartbeat.server.maintenance import MaintenanceCalendar
from heartbeat.server.notify.base import Notification
from heartbeat.server.notify.routing import Router
from heartbeat.server.notify.service import NotifierService
from heartbeat.server.operations import OperationsService, load_operations
from heartbeat.server.registry import Host
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.settings import parse_settings
from heartbeat.server.silences import SilenceBook
from heartbeat.server.store import StoreService, open_sqlite
from heartbeat.server.suppression import Suppression
from heartbeat.server.thresholds.engine import ThresholdEngine

T0 = 1_800_000_000.0
SRC = ("10.0.0.5", 40000)
CONFIG = """
email: {to: [ops@example.com]}
grace: 5
interval: 10
hosts:
  router1: {}
  web1: {parents: [router1]}
  web2: {parents: [router1]}
  db1: {}
thresholds:
  cpu_monitor:
    cpu_percent: {warning: 80, critical: 90, hysteresis: 0}
threshold_renotify_interval: 60
"""
CPU = "cpu_monitor.cpu_percent"
BACKUP = JobSpec("backup", "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f", Period(3600), 300, 600,
                 host="db1")
"""Due to end an hour after it is added, late 5 minutes later (at T0 + 3900)."""


class Recorder:
    name = "email"
    max_recipients = 50
    secrets: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> Deferred[None]:
        self.sent.append(notification)
        return succeed(None)


class Server:
    """The parts of one server that decide and send notices, over a store file."""

    def __init__(self, path: Path, now: float = T0, hosts: list[Host] | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(now)
        settings = parse_settings(CONFIG, "test.yaml")
        config: ServerConfig = settings.config
        self.bus = EventBus(on_error=self._raise)
        flaps = make_flaps(config)
        self.registry = make_registry(config, settings.dependencies, flaps)
        self.registry.restore(hosts or [], now)  # as the store's hosts, before anything
        self.store = StoreService(open_sqlite(path), ImmediateWorker(), self.clock, 0.5)
        engine = ThresholdEngine(settings.rules, flaps=flaps)
        self.jobs = JobService([BACKUP], self.store, self.bus, self.clock, retention=86400,
                               stored=self.store.load(load_jobs))
        self.alerting = AlertingService(engine, self.bus, self.store, self.clock,
                                        period=reminder_period(60))
        suppression = Suppression(MaintenanceCalendar(), SilenceBook(), AckBook())
        self.operations = OperationsService(suppression, self.bus.publish, self.store,
                                            self.clock, registry=self.registry, engine=engine,
                                            flaps=flaps, jobs=self.jobs.book,
                                            default_zone="UTC")
        self.operations.restore(self.store.load(load_operations))
        self.operations.attach()
        self.channel = Recorder()
        conf: ServerConfig = parse_config(ServerConfig, CONFIG, "test.yaml")
        self.notifier = NotifierService([self.channel], Router(conf, ["email"]), self.clock,
                                        self.bus, suppression=suppression)
        wire(self.bus, alerting=self.alerting, operations=self.operations,
             notifier=self.notifier)
        for service in (self.store, self.notifier, self.alerting, self.operations, self.jobs):
            service.startService()

    @staticmethod
    def _raise(subscriber: Any, event: Event, error: BaseException) -> None:
        raise error

    def stop(self) -> None:
        for service in (self.jobs, self.operations, self.alerting, self.notifier, self.store):
            service.stopService()

    def advance(self, seconds: float) -> None:
        """Time passes: the monitor's expiry, then the timers."""
        self.clock.advance(seconds)
        for event in self.registry.expire(self.clock.seconds()):
            self.bus.publish(event)

    def beat(self, *names: str) -> None:
        for name in names:
            outcome = self.registry.apply({"ID": "HTB", "name": name}, SRC, self.clock.seconds())
            for event in outcome.events:
                self.bus.publish(event)

    def cpu(self, value: float) -> None:
        self.bus.publish(Event(HOST_PLUGINS, "db1", self.clock.seconds(), {
            "plugins": {"cpu_monitor": {"cpu_percent": value}}}))

    def ping(self, kind: str) -> None:
        job = self.jobs.book.jobs["backup"]
        self.jobs.ping(job, kind)

    def titles(self) -> list[str]:
        sent, self.channel.sent = self.channel.sent, []
        return [n.title for n in sent]


def test_maintenance_holds_then_notifies_once_at_its_end(tmp_path: Path) -> None:
    """No notice during the window; the DOWN still there at its end: one STILL DOWN."""
    server = Server(tmp_path / "s.sqlite3")
    server.beat("db1")
    server.operations.add_window({"hosts": ["db1"], "start": T0, "duration": 120}, "alice")
    server.advance(20)  # past interval + grace: DOWN, in the window
    assert server.registry.get("db1").state.value == "DOWN"  # type: ignore[union-attr]
    assert server.titles() == []
    server.advance(100)
    assert server.titles() == ["STILL DOWN: db1"]
    server.advance(600)
    assert server.titles() == []
    assert server.notifier.to_json()["suppressed"] == {"first_sight": 1, "maintenance": 1}
    server.stop()


def test_still_down_names_the_hosts_still_unreachable_behind_it(tmp_path: Path) -> None:
    """A router DOWN through a window, its hosts UNREACHABLE behind it: the STILL DOWN at
    the window's end names those still unreachable then, as the DOWN would have."""
    server = Server(tmp_path / "s.sqlite3")
    server.beat("router1", "web1", "web2")
    server.operations.add_window({"hosts": ["router1"], "start": T0, "duration": 120}, "alice")
    server.advance(20)
    assert [server.registry.get(n).state.value  # type: ignore[union-attr]
            for n in ("router1", "web1", "web2")] == ["DOWN", "UNREACHABLE", "UNREACHABLE"]
    assert server.titles() == []
    server.beat("web2")  # back on another path before the window ends
    server.advance(100)
    sent, server.channel.sent = server.channel.sent, []
    assert [n.title for n in sent] == ["STILL DOWN: router1"]
    assert sent[0].body.endswith("which ended.\nBehind it, now UNREACHABLE (1): web1.")
    server.stop()


def test_recovery_inside_the_window_is_not_notified(tmp_path: Path) -> None:
    """DOWN and back UP within the window: nobody heard of it, nothing at its end."""
    server = Server(tmp_path / "s.sqlite3")
    server.beat("db1")
    server.operations.add_window({"hosts": ["db1"], "start": T0, "duration": 120}, "alice")
    server.advance(20)
    server.advance(30)
    server.beat("db1")
    server.clock.advance(100)  # the window ends; db1 is UP
    assert server.titles() == []
    assert server.notifier.to_json()["suppressed"] == {
        "first_sight": 1, "maintenance": 1, "problem_not_notified": 1}
    server.stop()


def test_silence_expiry_renotifies_a_problem_still_there(tmp_path: Path) -> None:
    """A silenced CRITICAL is not notified (nor reminded); at the silence's expiry it is,
    once; its reminders go on after that."""
    server = Server(tmp_path / "s.sqlite3")
    server.operations.add_silence({"host": "db1", "metric": "cpu_monitor.*", "duration": 100,
                                   "comment": "load test"}, "bob")
    server.cpu(95)
    server.clock.advance(75)  # a reminder due at +60: held too
    assert server.titles() == []
    server.clock.advance(25)
    assert server.titles() == ["STILL CRITICAL: db1"]
    server.clock.advance(75)
    assert server.titles() == ["REMINDER (CRITICAL): db1"]
    assert server.notifier.to_json()["suppressed"] == {"silenced": 2}
    server.stop()


def test_an_ack_stops_reminders_until_the_level_changes(tmp_path: Path) -> None:
    """Reminders of an acknowledged CRITICAL are held; WARNING ends the acknowledgement (a
    step down is not notified itself) and its reminders go out again."""
    server = Server(tmp_path / "s.sqlite3")
    server.cpu(95)
    assert server.titles() == ["CRITICAL: db1"]
    server.operations.acknowledge("db1", CPU, "CRITICAL", "bob", "on it")
    for _ in range(4):
        server.clock.advance(60)
        server.cpu(95)
    assert server.titles() == []
    server.cpu(85)
    assert server.operations.acks.get("db1", CPU) is None
    server.clock.advance(75)
    assert server.titles() == ["REMINDER (WARNING): db1"]
    assert server.notifier.to_json()["suppressed"]["acknowledged"] >= 3
    server.stop()


def test_children_behind_a_down_parent_are_listed_not_notified(tmp_path: Path) -> None:
    """The router and the hosts behind it fall silent together: one DOWN notice naming them,
    none for the children (UNREACHABLE); nothing for them when all come back."""
    server = Server(tmp_path / "s.sqlite3")
    server.beat("router1", "web1", "web2")
    server.advance(16)
    states = {n: server.registry.get(n).state.value  # type: ignore[union-attr]
              for n in ("router1", "web1", "web2")}
    assert states == {"router1": "DOWN", "web1": "UNREACHABLE", "web2": "UNREACHABLE"}
    sent = list(server.channel.sent)
    assert [n.title for n in sent] == ["DOWN: router1"]
    assert "Behind it, now UNREACHABLE (2): web1, web2." in sent[0].body
    server.titles()
    server.advance(30)
    server.beat("router1", "web1", "web2")
    assert server.titles() == ["UP: router1"]
    server.stop()


def test_flapping_host_gets_one_notice(tmp_path: Path) -> None:
    """A host going DOWN and UP over and over: its first transitions notify, then one
    FLAPPING notice, then nothing while it flaps."""
    server = Server(tmp_path / "s.sqlite3")
    server.beat("db1")
    titles: list[str] = []
    for _ in range(8):
        server.advance(20)
        server.beat("db1")
        titles += server.titles()
    assert titles.count("FLAPPING: db1") == 1
    assert titles.index("FLAPPING: db1") == len(titles) - 1  # nothing after it
    assert set(titles[:-1]) <= {"DOWN: db1", "UP: db1"}
    assert server.notifier.to_json()["suppressed"]["flapping"] > 0
    server.stop()


def test_held_problem_and_ack_survive_a_restart(tmp_path: Path) -> None:
    """A DOWN held by a window, then a restart: at the window's end it still notifies once;
    an acknowledgement still holds its host's reminders."""
    path = tmp_path / "s.sqlite3"
    first = Server(path)
    first.beat("db1")
    first.operations.add_window({"hosts": ["db1"], "start": T0, "duration": 120}, "alice")
    first.operations.acknowledge("web1", HOST_TARGET, "DOWN", "bob", "rebooting")
    first.advance(20)
    assert first.titles() == []
    first.stop()
    second = Server(path, T0 + 30, hosts=list(first.registry))
    assert second.operations.acks.get("web1", HOST_TARGET) is not None
    second.advance(90)
    assert second.titles() == ["STILL DOWN: db1"]
    second.stop()


def test_a_job_late_in_the_window_notifies_once_at_its_end(tmp_path: Path) -> None:
    """A cron job on db1 falling late inside db1's window: no notice while it is open;
    still late when it ends: one STILL CRITICAL, as a host's DOWN; its recovery after
    that is notified as usual."""
    server = Server(tmp_path / "s.sqlite3")
    server.operations.add_window({"hosts": ["db1"], "start": T0, "duration": 7200}, "alice")
    server.clock.advance(3900)
    assert server.jobs.book.jobs["backup"].level == "CRITICAL"
    assert server.titles() == []
    assert [h.key for h in server.operations.suppression.held()] == ["job:backup"]
    server.clock.advance(3299)
    assert server.titles() == []
    server.clock.advance(1)
    sent = list(server.channel.sent)
    assert server.titles() == ["STILL CRITICAL: job backup"]
    assert sent[0].body.startswith("Job backup on db1 is still CRITICAL (late) since ")
    assert "notices were held during maintenance '1', which ended.\nNo successful run yet." \
        in sent[0].body
    server.clock.advance(3600)
    assert server.titles() == []
    server.ping("success")
    assert server.titles() == ["RECOVERED: job backup"]
    assert server.notifier.to_json()["suppressed"] == {"maintenance": 1}
    server.stop()


def test_a_job_that_recovered_in_the_window_is_not_notified(tmp_path: Path) -> None:
    """Late and then a successful run, both inside the window: nobody heard of the problem,
    so neither it, nor its recovery, nor anything at the window's end is notified."""
    server = Server(tmp_path / "s.sqlite3")
    server.operations.add_window({"hosts": ["db1"], "start": T0, "duration": 7200}, "alice")
    server.clock.advance(4000)
    server.ping("success")
    server.clock.advance(3200)  # the window ends; the job is OK
    assert server.titles() == []
    assert server.operations.suppression.held() == []
    assert server.notifier.to_json()["suppressed"] == {
        "maintenance": 1, "problem_not_notified": 1}
    server.stop()


def test_a_job_failure_held_by_a_silence_outlives_a_restart(tmp_path: Path) -> None:
    """A failed run of a job silenced by ``job:*`` (held), then a restart: the held problem
    is read back from the store and, still failed at the silence's expiry, notified once."""
    path = tmp_path / "s.sqlite3"
    first = Server(path)
    first.operations.add_silence({"host": "db1", "metric": "job:*", "duration": 600,
                                  "comment": "restoring"}, "bob")
    first.ping("fail")
    assert first.titles() == []
    first.stop()
    second = Server(path, T0 + 60)
    assert [h.key for h in second.operations.suppression.held()] == ["job:backup"]
    second.clock.advance(539)
    assert second.titles() == []
    second.clock.advance(1)
    sent = list(second.channel.sent)
    assert second.titles() == ["STILL CRITICAL: job backup"]
    assert "(failed (exit code 1))" in sent[0].body
    assert "silence 1 by bob (restoring)" in sent[0].body
    second.clock.advance(600)
    assert second.titles() == []
    second.stop()
