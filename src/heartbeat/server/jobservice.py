"""JobService: the cron jobs' pings in, their level changes out on the bus, kept in the store.

The pure :class:`~heartbeat.server.jobs.JobBook` decides; this service owns its
one timer (armed at :meth:`JobBook.next_deadline`, so a late or long-running
job is noticed when it becomes so, not by a poll), the jobs' rows in the store
(each job's UUID, made once when the config gives none, and its live state; every
run that ended), and the events: ``job.ping`` for every ping the server took, and
``job`` for every change of a job's level, which the notifier turns into notices
through the channels and routing of the job's host (``host:``), like that host's
own. The HTTP ping routes (``/ping/<uuid>``), the ``JOB`` datagram and the API
all call :meth:`JobService.ping` and read the same book.
"""

from __future__ import annotations

import dataclasses
import json
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from heartbeat.events import JOB, JOB_PING, Event, EventBus
from heartbeat.server.jobs import RECENT_RUNS, Job, JobBook, JobChange, JobSpec, Run
from heartbeat.server.metrics import JobRow
from heartbeat.server.store import StoreService
from heartbeat.server.tables import JOB_RUNS, JOBS, Tables, Write
from heartbeat.text import json_bytes

__all__ = [
    "FAIL_EXIT_CODE",
    "HISTORY_LIMIT",
    "PING_KINDS",
    "JobService",
    "StoredJob",
    "load_jobs",
    "read_runs",
]

log = Logger()
PING_KINDS: Final = ("start", "success", "fail", "exit")
FAIL_EXIT_CODE: Final = 1
"""The exit code a ``fail`` ping without one stands for."""
HISTORY_LIMIT: Final = 200
"""Runs ``GET /api/0/jobs/<name>`` returns at most (the store keeps history_retention)."""
LOG_TAIL_LINES: Final = 20
"""Lines of a failed run's log that its notice quotes."""


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A ``jobs`` row and the newest runs of that job in ``job_runs``."""

    name: str
    uuid: str
    created: float
    state: dict[str, Any]
    runs: tuple[Run, ...] = ()


def _run(row: Sequence[Any]) -> Run:
    _, _, started, ended, outcome, exit_code, text, source = row
    return Run(started, ended, outcome, exit_code, text, source)


def _when(row: Sequence[Any]) -> float:
    """A run row's time: its end, else its start, else when it was recorded."""
    _, recorded, started, ended = row[:4]
    return float(ended if ended is not None else started if started is not None else recorded)


def load_jobs(tables: Tables) -> list[StoredJob]:
    """Every stored job with its newest runs (oldest first), at start-up."""
    runs: dict[str, list[tuple[Any, ...]]] = {}
    for row in tables.rows(JOB_RUNS):
        runs.setdefault(row[0], []).append(row)
    found = []
    for name, uuid, created, state in tables.rows(JOBS):
        mine = sorted(runs.get(name, []), key=_when)[-RECENT_RUNS:]
        found.append(StoredJob(name, uuid, created, json.loads(state),
                               tuple(_run(r) for r in mine)))
    return found


def read_runs(name: str, limit: int = HISTORY_LIMIT) -> Any:
    """A store read: the newest ``limit`` runs of job ``name``, newest first."""
    def run(tables: Tables) -> list[dict[str, Any]]:
        rows = sorted(tables.rows(JOB_RUNS, job=name), key=_when, reverse=True)
        return [_run(row).to_json() for row in rows[:limit]]
    return run


def _state(job: Job) -> dict[str, Any]:
    running = job.running
    return {"last_end": job.last_end, "last_success": job.last_success, "failed": job.failed,
            "last_exit": job.last_exit, "level": job.level, "reason": job.reason,
            "running": None if running is None else {"started": running.started,
                                                     "source": running.source}}


def _restored(spec: JobSpec, stored: StoredJob) -> Job:
    state = stored.state
    job = Job(spec, stored.created, last_end=state.get("last_end"),
              last_success=state.get("last_success"), failed=bool(state.get("failed")),
              last_exit=state.get("last_exit"), level=state.get("level", "OK"),
              reason=state.get("reason", ""))
    running = state.get("running")
    if running is not None:
        job.running = Run(running.get("started"), None, "running", source=running.get("source"))
    job.runs.extend(stored.runs)
    return job


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class JobService(Service):
    """Every configured job: pings, the one deadline timer, events and the store."""

    name = "jobs"

    def __init__(self, specs: Iterable[JobSpec], store: StoreService, bus: EventBus,
                 clock: IReactorTime, *, retention: float, stored: Iterable[StoredJob] = ()
                 ) -> None:
        self.book = JobBook()
        self.store = store
        self.bus = bus
        self.clock = clock
        self.retention = retention
        self._call: IDelayedCall | None = None
        self.pings = 0
        self.unknown_pings = 0
        self._restore(specs, stored)
        store.add_source(self._writes)
        store.add_maintenance(self._prune)

    def _restore(self, specs: Iterable[JobSpec], stored: Iterable[StoredJob]) -> None:
        """Each configured job with its stored UUID and state; stored jobs no longer
        configured are removed from the store."""
        now = self.clock.seconds()
        specs = tuple(specs)
        kept = {job.name: job for job in stored}
        taken = {spec.uuid for spec in specs if spec.uuid}
        for given in specs:
            old = kept.pop(given.name, None)
            spec = given
            if not given.uuid:
                uuid = old.uuid if old is not None and old.uuid not in taken else \
                    str(uuidlib.uuid4())
                spec = dataclasses.replace(given, uuid=uuid)
                taken.add(uuid)
            self.book.put(spec, now, None if old is None else _restored(spec, old))
            if old is None:
                log.info("jobs: {name} added ({schedule})", name=spec.name,
                         schedule=str(spec.timing))
        self._gone = list(kept)
        for name in kept:
            log.info("jobs: {name} is no longer configured: its state and runs are removed",
                     name=name)

    # The store
    def _writes(self) -> list[Write]:
        changed, removed, finished = self.book.take_dirty()
        removed, self._gone = removed + self._gone, []
        if not (changed or removed or finished):
            return []
        jobs = [(job.name, job.spec.uuid, job.created, json_bytes(_state(job)).decode())
                for job in changed]
        now = self.clock.seconds()
        runs = [(name, now, run.started, run.ended, run.outcome, run.exit_code, run.log,
                 run.source) for name, run in finished]
        gone = [(name,) for name in removed]

        def write(tables: Tables) -> None:
            tables.delete(JOBS, gone)
            tables.delete(JOB_RUNS, gone, by=("job",))
            tables.put(JOBS, jobs)
            tables.add(JOB_RUNS, runs)
        return [write]

    def _prune(self, tables: Tables, now: float) -> None:
        tables.delete_before(JOB_RUNS, "recorded", now - self.retention)

    # Pings
    def job(self, uuid: str) -> Job | None:
        return self.book.by_uuid(uuid)

    def on_received(self, event: Event) -> None:
        """A ``JOB`` datagram (docs/PROTOCOL.md): taken for the job it names when it comes
        from the job's own ``host:`` (as signed as that host's datagrams must be) or
        carries the job's UUID; else counted in ``unknown_pings``."""
        message = event.data.get("message")
        if not isinstance(message, dict) or message.get("ID") != "JOB":
            return
        job = self.book.jobs.get(message["job"])
        uuid = message.get("uuid")
        if job is None or not (job.spec.host == event.host or (
                isinstance(uuid, str) and self.book.by_uuid(uuid) is job)):
            self.unknown_pings += 1
            log.debug("jobs: a JOB datagram from {host} for {job!r} not taken", host=event.host,
                      job=message["job"])
            return
        self.ping(job, str(message["ping"]), exit_code=message.get("rc"),
                  log_text=str(message.get("log", "")), source=f"{event.host} (UDP)")

    def ping(self, job: Job, kind: str, *, exit_code: int | None = None, log_text: str = "",
             source: str | None = None) -> None:
        """A run of ``job`` started (``start``) or ended (``success``, ``fail``, ``exit``
        with ``exit_code``); ``log_text``: its output (the store keeps its tail)."""
        assert kind in PING_KINDS
        now = self.clock.seconds()
        self.pings += 1
        text = log_text.replace("\x00", "\ufffd")
        if kind == "start":
            changes = self.book.start(job, now, source)
            code = None
        else:
            code = 0 if kind == "success" else FAIL_EXIT_CODE if exit_code is None \
                else exit_code
            changes = self.book.finish(job, now, code, text, source)
        self.bus.publish(Event(JOB_PING, job.spec.host or "", now, {
            "job": job.name, "ping": "start" if kind == "start" else
            "success" if code == 0 else "fail", "exit_code": code, "source": source,
            "log_bytes": len(text.encode("utf-8", "replace"))}))
        self._publish(changes)
        self._arm()

    def _publish(self, changes: Iterable[JobChange]) -> None:
        for change in changes:
            job = self.book.jobs.get(change.job)
            data: dict[str, Any] = change.to_json()
            if job is not None:
                last = job.runs[-1] if job.runs else None
                data.update({
                    "schedule": str(job.spec.timing), "grace": job.spec.grace,
                    "max_runtime": job.spec.max_runtime, "expected": job.expected(),
                    "last_success": job.last_success, "exit_code": job.last_exit,
                    "running_since": None if job.running is None else job.running.started,
                    "duration": None if last is None else last.duration,
                    "log_tail": _tail(last.log) if last is not None and job.failed else ""})
            log.info("jobs: {message}", message=change.message)
            self.bus.publish(Event(JOB, change.host or "", change.ts, data))

    # The timer
    def _arm(self) -> None:
        if not self.running:
            return
        deadline = self.book.next_deadline()
        call = self._call
        if call is not None and call.active():
            if deadline is not None and call.getTime() == deadline:
                return
            call.cancel()
        self._call = None
        if deadline is not None:
            delay = max(0.0, deadline - self.clock.seconds())
            self._call = self.clock.callLater(delay, self._due)

    def _due(self) -> None:
        self._call = None
        self._publish(self.book.check(self.clock.seconds()))
        self._arm()

    def startService(self) -> None:
        super().startService()
        self._due()  # what fell due while the server was down, then the next deadline

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    # Reading
    def runs(self, name: str, limit: int = HISTORY_LIMIT) -> Deferred[list[dict[str, Any]]]:
        return self.store.read(read_runs(name, limit))

    def metric_rows(self) -> list[JobRow]:
        """Every job as ``/metrics`` shows it (its host "" when it has none)."""
        rows = []
        for job in sorted(self.book, key=lambda j: j.name):
            last = next((r.duration for r in reversed(job.runs) if r.duration is not None),
                        None)
            rows.append(JobRow(job.name, job.spec.host or "", job.level, job.last_success,
                               last, job.expected()))
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"jobs": len(self.book), "levels": self.book.summary(), "pings": self.pings,
                "unknown_pings": self.unknown_pings,
                "next_deadline": self.book.next_deadline()}
