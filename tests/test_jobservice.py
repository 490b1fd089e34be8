"""JobService on a Clock: one timer at the book's next deadline, events, the store, restarts;
and the ``jobs:`` config read into specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from heartbeat.config.loader import ConfigError
from heartbeat.events import JOB, JOB_PING, Event, EventBus
from heartbeat.server.jobs import JobSpec, Period
from heartbeat.server.jobservice import JobService, load_jobs
from heartbeat.server.notify.message import Skip, notification_for
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.settings import parse_settings
from heartbeat.server.store import StoreService, open_sqlite
from heartbeat.server.tables import JOB_RUNS

T0 = 1_800_000_000.0
UUID = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"


def _raise(subscriber: Any, event: Event, error: BaseException) -> None:
    raise error


class Rig:
    def __init__(self, path: Path, specs: list[JobSpec] | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.path = path
        self.events: list[Event] = []
        self.bus = EventBus(on_error=_raise)
        self.bus.subscribe(self.events.append, (JOB, JOB_PING))
        self.store = StoreService(open_sqlite(path), ImmediateWorker(), self.clock, 0.5)
        self.specs = specs if specs is not None else [
            JobSpec("backup", UUID, Period(3600), 300, 600, host="db1"),
            JobSpec("certs", "", Period(86400), 3600, 3600)]
        self.service = JobService(self.specs, self.store, self.bus, self.clock,
                                  retention=7 * 86400, stored=self.store.load(load_jobs))
        self.store.startService()
        self.service.startService()

    def stop(self) -> None:
        self.service.stopService()
        self.store.stopService()

    def levels(self) -> list[tuple[str, str, str]]:
        return [(e.data["job"], e.data["level"], e.data["reason"]) for e in self.events
                if e.kind == JOB]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "s.sqlite3")


def test_one_timer_at_the_next_deadline_makes_a_silent_job_late(rig: Rig) -> None:
    """No ping: CRITICAL at created + period + grace exactly, once; the only delayed call
    is that deadline."""
    assert [c.getTime() for c in rig.clock.getDelayedCalls()
            if c.func == rig.service._due] == [T0 + 3900]
    rig.clock.advance(3899)
    assert rig.levels() == []
    rig.clock.advance(1)
    assert rig.levels() == [("backup", "CRITICAL", "late")]
    (event,) = [e for e in rig.events if e.kind == JOB]
    assert (event.host, event.ts, event.data["notify"]) == ("db1", T0 + 3900, True)
    rig.clock.advance(86400 * 2)
    assert [lv for lv in rig.levels() if lv[0] == "backup"] == [
        ("backup", "CRITICAL", "late")]


def test_pings_publish_runs_and_a_failure_then_a_recovery(rig: Rig) -> None:
    job = rig.service.job(UUID.upper())
    assert job is not None
    rig.clock.advance(10)
    rig.service.ping(job, "start", source="192.0.2.1")
    rig.clock.advance(5)
    rig.service.ping(job, "exit", exit_code=3, log_text="step 1\nstep 2\ndisk full\n",
                     source="192.0.2.1")
    pings = [(e.data["ping"], e.data["exit_code"]) for e in rig.events if e.kind == JOB_PING]
    assert pings == [("start", None), ("fail", 3)]
    (failed,) = [e for e in rig.events if e.kind == JOB]
    assert (failed.data["reason"], failed.data["exit_code"], failed.data["log_tail"],
            failed.data["duration"]) == ("failed (exit code 3)", 3,
                                         "step 1\nstep 2\ndisk full", 5.0)
    note = notification_for(failed)
    assert not isinstance(note, Skip)
    assert (note.title, note.level, note.hosts) == ("FAILED: job backup", "critical", ("db1",))
    assert note.body.endswith("The end of its output:\nstep 1\nstep 2\ndisk full")
    rig.clock.advance(60)
    rig.service.ping(job, "success")
    assert rig.levels()[-1] == ("backup", "OK", "")
    recovered = notification_for(rig.events[-1])
    assert not isinstance(recovered, Skip)
    assert recovered.title == "RECOVERED: job backup"


def test_fail_without_code_is_exit_code_one(rig: Rig) -> None:
    job = rig.service.book.jobs["backup"]
    rig.service.ping(job, "fail")
    assert (job.last_exit, rig.levels()) == (1, [("backup", "CRITICAL", "failed (exit code 1)")])


def test_a_long_run_warns_at_max_runtime(rig: Rig) -> None:
    """A run started and still going at max_runtime: WARNING, notified as running too long."""
    job = rig.service.book.jobs["backup"]
    rig.service.ping(job, "start")
    rig.clock.advance(600)
    assert rig.levels() == [("backup", "WARNING", "running for 600 s")]
    note = notification_for([e for e in rig.events if e.kind == JOB][-1])
    assert not isinstance(note, Skip)
    assert (note.title, note.level) == ("RUNNING TOO LONG: job backup", "warning")


def test_state_uuid_and_runs_outlive_a_restart(tmp_path: Path) -> None:
    """A made UUID is kept; a failed job is still failed after a restart (no new notice);
    its runs are in the store; a job no longer configured is removed from it."""
    first = Rig(tmp_path / "s.sqlite3")
    made = first.service.book.jobs["certs"].spec.uuid
    assert len(made) == 36 and made != UUID
    first.service.ping(first.service.book.jobs["backup"], "exit", exit_code=2, log_text="oops")
    first.service.ping(first.service.book.jobs["certs"], "success")
    first.stop()

    again = Rig(tmp_path / "s.sqlite3")
    certs, backup = again.service.book.jobs["certs"], again.service.book.jobs["backup"]
    assert certs.spec.uuid == made and again.service.job(made) is certs
    assert (backup.level, backup.failed, backup.last_exit) == ("CRITICAL", True, 2)
    assert [(r.outcome, r.exit_code, r.log) for r in backup.runs] == [("fail", 2, "oops")]
    assert again.levels() == []
    again.stop()

    third = Rig(tmp_path / "s.sqlite3", [JobSpec("certs", "", Period(86400), 3600, 3600)])
    third.store.flush()
    assert [j.name for j in third.store.load(load_jobs)] == ["certs"]
    assert {r[0] for r in third.store.load(lambda t: t.rows(JOB_RUNS))} == {"certs"}
    third.stop()


def test_a_job_late_while_the_server_was_down_is_late_at_start(tmp_path: Path) -> None:
    first = Rig(tmp_path / "s.sqlite3")
    first.stop()
    again = Rig.__new__(Rig)
    clock = Clock()
    clock.advance(T0 + 10_000)
    again.clock, again.events = clock, []
    again.bus = EventBus(on_error=_raise)
    again.bus.subscribe(again.events.append, (JOB,))
    again.store = StoreService(open_sqlite(tmp_path / "s.sqlite3"), ImmediateWorker(), clock)
    again.service = JobService([JobSpec("backup", UUID, Period(3600), 300, 600)],
                               again.store, again.bus, clock, retention=86400,
                               stored=again.store.load(load_jobs))
    again.service.startService()
    assert [(e.data["job"], e.data["level"]) for e in again.events] == [("backup", "CRITICAL")]
    again.service.stopService()


def test_runs_are_read_back_newest_first(rig: Rig) -> None:
    job = rig.service.book.jobs["backup"]
    for code in (0, 4, 0):
        rig.clock.advance(1)
        rig.service.ping(job, "exit", exit_code=code)
    read: list[Any] = []
    rig.service.runs("backup").addCallback(read.append)
    assert [r["exit_code"] for r in read[0]] == [0, 4, 0]
    assert [r["ended"] for r in read[0]] == [T0 + 3, T0 + 2, T0 + 1]


CONFIG = """
jobs:
  backup: {schedule: "30 2 * * *", timezone: Europe/Berlin, grace: 30m, max_runtime: 2h,
           host: db1, description: nightly dump}
  certs: {period: 1d, uuid: 0F8E6D4C-2B1A-4C3D-9E8F-7A6B5C4D3E2F}
"""


def test_config_jobs_become_specs() -> None:
    backup, certs = parse_settings(CONFIG, "hb.yaml").jobs
    assert (backup.name, str(backup.timing), backup.grace, backup.max_runtime, backup.host,
            backup.uuid) == ("backup", "30 2 * * * (Europe/Berlin)", 1800.0, 7200.0, "db1", "")
    assert (certs.timing, certs.grace, certs.max_runtime, certs.uuid) == (
        Period(86400), 3600.0, 3600.0, UUID)


@pytest.mark.parametrize(("text", "message"), [
    ("jobs: {b: {grace: 5m}}", "hb.yaml: jobs.b: give either schedule"),
    ("jobs: {b: {schedule: '* * *'}}", "hb.yaml: jobs.b.schedule: "),
    ("jobs: {b: {schedule: '@daily', timezone: Mars/Base}}", "hb.yaml: jobs.b.timezone: "),
    ("jobs: {b: {period: 1h, timezone: UTC}}", "hb.yaml: jobs.b.timezone: only a schedule"),
    ("jobs: {b: {period: soon}}", "hb.yaml: jobs.b.period: not a duration"),
    ("jobs: {b: {period: 1h, uuid: nope}}", "hb.yaml: jobs.b.uuid: not a UUID"),
    (f"jobs: {{a: {{period: 1h, uuid: {UUID}}}, b: {{period: 1h, uuid: {UUID}}}}}",
     "hb.yaml: jobs.b.uuid: job 'a' has it too"),
    ("jobs: {'a b': {period: 1h}}", "hb.yaml: jobs.a b: a job's name is"),
    ("jobs: {b: {period: 1h, host: 'db 1'}}", "hb.yaml: jobs.b.host: not a host name"),
])
def test_config_mistakes_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "hb.yaml")
    assert str(caught.value).startswith(message)


def test_the_docs_examples_load_and_mean_what_they_say() -> None:
    """docs/JOBS.md's jobs: example and README.rst's one are configs that say what the
    pages say of them."""
    import re
    import textwrap

    root = Path(__file__).parent.parent
    page = (root / "docs" / "JOBS.md").read_text()
    example = re.search(r"```yaml\n(jobs:\n.*?)```", page, re.S)
    assert example is not None
    backup, certs = parse_settings(example.group(1), "docs/JOBS.md").jobs
    assert (str(backup.timing), backup.grace, backup.max_runtime, backup.host) == (
        "30 2 * * * (Europe/Berlin)", 3600.0, 3 * 3600.0, "db1")
    assert (str(certs.timing), certs.grace, certs.uuid) == ("every 1d", 7200.0, UUID)
    readme = (root / "README.rst").read_text().split("Cron jobs\n=========", 1)[1]
    block = readme.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    (job,) = parse_settings(textwrap.dedent(block), "README.rst").jobs
    assert (job.name, str(job.timing), job.grace, job.host) == (
        "backup", "30 2 * * * (Europe/Berlin)", 3600.0, "db1")
