"""Cron-job pings: is each job running when it should, finishing, and succeeding? Pure.

A job is something that runs elsewhere on a schedule (a backup, a certificate
renewal) and tells the server about each run: a *start*, then a *success* or a
*failure* (an exit code). The server knows when the next run should end: the
first time the job's :class:`Timing` (a cron schedule in a time zone, or a
period) gives after the last run ended, or after the job was added. A job is

- **late** when that time plus ``grace`` has passed with no run ended since
  (a run still within ``max_runtime`` is given the time to finish);
- **failed** when its last run failed, until a run succeeds;
- **running too long** when a run started ``max_runtime`` ago has not ended.

Its level is CRITICAL when late or failed, WARNING when only running too long,
else OK; every change of level is a :class:`JobChange` the service publishes
(and notifies, when it is worse or a recovery). Time comes in as ``now``;
:meth:`JobBook.next_deadline` says when the next change can happen without a
ping, so the service needs one timer, not a poll.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = [
    "JOB_NAME",
    "MAX_LOG_BYTES",
    "OUTCOMES",
    "RECENT_RUNS",
    "Job",
    "JobBook",
    "JobChange",
    "JobSpec",
    "Period",
    "Run",
    "Timing",
    "valid_uuid",
]

MAX_LOG_BYTES: Final = 10_000
"""A run's log (the body of its pings) is kept up to this many bytes: its tail."""
RECENT_RUNS: Final = 20
"""Runs each job keeps in memory for the API's summary; the store keeps more."""
OUTCOMES: Final = ("success", "fail", "running", "unfinished")
LEVELS: Final = ("OK", "WARNING", "CRITICAL")
JOB_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def valid_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in its usual hyphenated form (either case)."""
    return _UUID.fullmatch(text.lower()) is not None


class Timing(Protocol):
    """When runs are due: a cron schedule in a time zone, or a fixed period."""

    def next_after(self, t: float) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Period:
    """A run every ``seconds``, counted from the end of the last one."""

    seconds: float

    def next_after(self, t: float) -> float:
        return t + self.seconds

    def __str__(self) -> str:
        return f"every {span(self.seconds)}"


def span(seconds: float) -> str:
    """``1d 2h``, ``90m``... for a period: whole units, the seconds as ``5s`` or ``0.5s``."""
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the configuration (or the API) says about a job."""

    name: str
    uuid: str
    timing: Timing
    grace: float
    max_runtime: float
    """How long a run may take before it is running too long (default: ``grace``)."""
    host: str | None = None
    """The host the job runs on: its access list, routing and maintenance apply."""
    description: str = ""


@dataclass(slots=True)
class Run:
    started: float | None
    ended: float | None
    outcome: str  # one of OUTCOMES
    exit_code: int | None = None
    log: str = ""
    source: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        return {"started": self.started, "ended": self.ended, "outcome": self.outcome,
                "duration": self.duration, "exit_code": self.exit_code, "log": self.log,
                "source": self.source}


@dataclass(slots=True)
class Job:
    """A job's live state (persisted)."""

    spec: JobSpec
    created: float
    last_end: float | None = None
    """When the last run ended (success or failure): the schedule counts from it."""
    last_success: float | None = None
    failed: bool = False
    last_exit: int | None = None
    running: Run | None = None
    level: str = "OK"
    reason: str = ""
    runs: deque[Run] = field(default_factory=lambda: deque(maxlen=RECENT_RUNS))
    version: int = 0
    """Bumped at every change: deadlines queued before it are stale."""
    _expected: tuple[Timing, float, float | None] | None = field(
        default=None, repr=False, compare=False)
    """(timing, reference, answer) of the last :meth:`expected`: a cron schedule's next
    fire costs tens of microseconds, and a change asks for it several times."""

    @property
    def name(self) -> str:
        return self.spec.name

    def expected(self) -> float | None:
        """When the next run should have ended by (before grace), or None: never."""
        reference = self.last_end if self.last_end is not None else self.created
        timing = self.spec.timing
        known = self._expected
        if known is not None and known[0] is timing and known[1] == reference:
            return known[2]
        answer = timing.next_after(reference)
        self._expected = (timing, reference, answer)
        return answer

    def conditions(self, now: float) -> tuple[bool, bool]:
        """(late, running too long) at ``now``."""
        expected = self.expected()
        running = self.running
        too_long = running is not None and running.started is not None and \
            now >= running.started + self.spec.max_runtime
        late = expected is not None and now >= expected + self.spec.grace and \
            (running is None or too_long)
        return late, too_long

    def deadlines(self) -> list[float]:
        """The times at which a condition may start to hold without a ping."""
        out = []
        expected = self.expected()
        if expected is not None:
            out.append(expected + self.spec.grace)
        if self.running is not None and self.running.started is not None:
            out.append(self.running.started + self.spec.max_runtime)
        return out

    def to_json(self, now: float) -> dict[str, Any]:
        expected = self.expected()
        late, too_long = self.conditions(now)
        return {
            "name": self.name, "uuid": self.spec.uuid, "host": self.spec.host,
            "description": self.spec.description, "schedule": str(self.spec.timing),
            "grace": self.spec.grace, "max_runtime": self.spec.max_runtime,
            "status": _status(self, late, too_long), "level": self.level, "reason": self.reason,
            "created": self.created, "last_end": self.last_end,
            "last_success": self.last_success, "last_exit_code": self.last_exit,
            "next_expected": expected, "late_after": None if expected is None
            else expected + self.spec.grace,
            "running_since": self.running.started if self.running is not None else None,
            "recent_runs": [r.to_json() for r in reversed(self.runs)],
        }


def _status(job: Job, late: bool, too_long: bool) -> str:
    """One word for lists: failed, late, running, new or up."""
    if job.failed:
        return "failed"
    if late:
        return "late"
    if job.running is not None:
        return "running"
    return "up" if job.last_end is not None else "new"


@dataclass(frozen=True, slots=True)
class JobChange:
    """A job's level changed: published as a ``job`` event, notified when ``notify``."""

    job: str
    host: str | None
    level: str
    previous: str
    reason: str
    message: str
    ts: float
    notify: bool

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job, "level": self.level, "previous": self.previous,
                "reason": self.reason, "message": self.message, "notify": self.notify}


def _bounded(text: str, limit: int = MAX_LOG_BYTES) -> str:
    """The last ``limit`` bytes of ``text`` (a log's tail is what explains a failure)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[-limit:].decode("utf-8", "ignore")


class JobBook:
    """Every job by name and by ping UUID, with one heap of upcoming deadlines."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._by_uuid: dict[str, Job] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._dirty: set[str] = set()
        self._finished: list[tuple[str, Run]] = []

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs.values())

    # Jobs
    def put(self, spec: JobSpec, now: float, restored: Job | None = None) -> Job:
        """Add or replace the job ``spec.name`` (keeping its state when only its spec changed)."""
        old = restored or self.jobs.get(spec.name)
        if old is not None and old.spec.uuid != spec.uuid:
            self._by_uuid.pop(old.spec.uuid, None)
        job = old if old is not None else Job(spec, now)
        job.spec = spec
        self.jobs[spec.name] = job
        self._by_uuid[spec.uuid] = job
        self._schedule(job)
        self._dirty.add(job.name)
        return job

    def remove(self, name: str) -> Job | None:
        job = self.jobs.pop(name, None)
        if job is not None:
            self._by_uuid.pop(job.spec.uuid, None)
            job.version += 1
            self._dirty.add(name)
        return job

    def by_uuid(self, uuid: str) -> Job | None:
        return self._by_uuid.get(uuid.lower())

    # Pings
    def start(self, job: Job, now: float, source: str | None = None) -> list[JobChange]:
        """A run began; a run still open is closed as ``unfinished``."""
        if job.running is not None:
            job.running.outcome = "unfinished"
            self._record(job, job.running)
        job.running = Run(now, None, "running", source=source)
        return self._changed(job, now)

    def finish(self, job: Job, now: float, exit_code: int = 0, log: str = "",
               source: str | None = None) -> list[JobChange]:
        """A run ended: exit code 0 is a success, anything else a failure."""
        run = job.running or Run(None, None, "running")
        job.running = None
        run.ended = now
        run.exit_code = exit_code
        run.outcome = "success" if exit_code == 0 else "fail"
        run.log = _bounded(log)
        run.source = source or run.source
        job.last_end = now
        job.last_exit = exit_code
        job.failed = exit_code != 0
        if not job.failed:
            job.last_success = now
        self._record(job, run)
        return self._changed(job, now)

    def _record(self, job: Job, run: Run) -> None:
        job.runs.append(run)
        self._finished.append((job.name, run))

    # Time
    def check(self, now: float) -> list[JobChange]:
        """Every change due by ``now`` (call it at :meth:`next_deadline`)."""
        out: list[JobChange] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, version, name = heapq.heappop(heap)
            job = self.jobs.get(name)
            if job is not None and job.version == version:
                out.extend(self._changed(job, now, reschedule=False))
                self._schedule(job, now)
        return out

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap:
            _, version, name = heap[0]
            job = self.jobs.get(name)
            if job is not None and job.version == version:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def _schedule(self, job: Job, now: float = -math.inf) -> None:
        job.version += 1
        for deadline in job.deadlines():
            if deadline > now:
                heapq.heappush(self._deadlines, (deadline, job.version, job.name))

    def _changed(self, job: Job, now: float, reschedule: bool = True) -> list[JobChange]:
        self._dirty.add(job.name)
        if reschedule:
            self._schedule(job)
        late, too_long = job.conditions(now)
        if job.failed:
            level = "CRITICAL"
            reason = f"failed (exit code {job.last_exit})"
        elif late:
            level = "CRITICAL"
            reason = "late"  # by when: Job.expected(), in the API and the notice
        elif too_long:
            level = "WARNING"
            assert job.running is not None and job.running.started is not None
            reason = f"running for {now - job.running.started:.0f} s"
        else:
            level, reason = "OK", ""
        if level == job.level:
            job.reason = reason
            return []
        previous = job.level
        job.level, job.reason = level, reason
        worse = LEVELS.index(level) > LEVELS.index(previous)
        if level == "OK":
            message = f"RECOVERED: job {job.name} ({previous} -> OK)"
        else:
            message = f"{level}: job {job.name} {reason}"
        return [JobChange(job.name, job.spec.host, level, previous, reason, message, now,
                          notify=worse or level == "OK")]

    # Persistence
    def take_dirty(self) -> tuple[list[Job], list[str], list[tuple[str, Run]]]:
        """(jobs changed, names removed, runs ended) since the last call."""
        changed = [self.jobs[n] for n in self._dirty if n in self.jobs]
        removed = [n for n in self._dirty if n not in self.jobs]
        finished, self._finished = self._finished, []
        self._dirty.clear()
        return changed, removed, finished

    def restore(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.jobs[job.name] = job
            self._by_uuid[job.spec.uuid] = job
            self._schedule(job)

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(LEVELS, 0)
        for job in self.jobs.values():
            counts[job.level] += 1
        return counts
