"""Cron-job pings, the pure engine: late, failed and long-running jobs, with plain times."""

from __future__ import annotations

from heartbeat.server.jobs import MAX_LOG_BYTES, JobBook, JobChange, JobSpec, Period

T0 = 1_800_000_000.0
UUID = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"


def _book(period: float = 3600.0, grace: float = 300.0, max_runtime: float | None = None
          ) -> JobBook:
    book = JobBook()
    book.put(JobSpec("backup", UUID, Period(period), grace,
                     max_runtime if max_runtime is not None else grace, host="db1"), T0)
    return book


def _levels(changes: list[JobChange]) -> list[tuple[str, str, bool]]:
    return [(c.level, c.previous, c.notify) for c in changes]


def test_late_after_period_plus_grace_then_recovers_on_success() -> None:
    """No run by created + period + grace: CRITICAL late, once; a success recovers it."""
    book = _book()
    assert book.next_deadline() == T0 + 3600 + 300
    assert book.check(T0 + 3899) == []
    late = book.check(T0 + 3900)
    assert late == [JobChange("backup", "db1", "CRITICAL", "OK",
                              "late",
                              "CRITICAL: job backup late",
                              T0 + 3900, notify=True)]
    assert book.check(T0 + 9999) == [] and book.next_deadline() is None
    job = book.by_uuid(UUID.upper())
    assert job is not None
    assert _levels(book.finish(job, T0 + 10000)) == [("OK", "CRITICAL", True)]
    assert book.next_deadline() == T0 + 10000 + 3600 + 300


def test_failure_is_critical_until_a_success() -> None:
    """A non-zero exit code alerts at once with the code; the next success recovers."""
    book = _book()
    job = book.jobs["backup"]
    (change,) = book.finish(job, T0 + 100, exit_code=3, log="disk full\n")
    assert (change.level, change.reason, change.notify) == ("CRITICAL", "failed (exit code 3)",
                                                           True)
    assert book.finish(job, T0 + 200, exit_code=4) == []
    assert job.reason == "failed (exit code 4)"
    assert _levels(book.finish(job, T0 + 300)) == [("OK", "CRITICAL", True)]
    assert [(r.outcome, r.exit_code, r.log) for r in job.runs] == [
        ("fail", 3, "disk full\n"), ("fail", 4, ""), ("success", 0, "")]


def test_a_run_in_progress_is_not_late_until_it_runs_too_long() -> None:
    """Started on time and still running at the deadline: not late; past max_runtime:
    WARNING running too long, and late from then on; its end recovers both."""
    book = _book(period=3600, grace=300, max_runtime=1800)
    job = book.jobs["backup"]
    assert book.start(job, T0 + 3500) == []
    assert book.check(T0 + 3900) == []
    assert book.next_deadline() == T0 + 3500 + 1800
    (change,) = book.check(T0 + 5300)
    assert (change.level, change.reason) == ("CRITICAL", "late")
    (done,) = book.finish(job, T0 + 5400)
    assert (done.level, job.runs[-1].duration) == ("OK", 1900.0)


def test_running_too_long_alone_is_a_warning() -> None:
    """A long run well before its deadline is a notified WARNING; its end recovers it."""
    book = _book(period=86400, grace=600, max_runtime=60)
    job = book.jobs["backup"]
    book.start(job, T0 + 10)
    (warn,) = book.check(T0 + 70)
    assert (warn.level, warn.reason, warn.notify) == ("WARNING", "running for 60 s", True)
    assert _levels(book.finish(job, T0 + 80)) == [("OK", "WARNING", True)]


def test_a_second_start_closes_the_first_run_as_unfinished() -> None:
    """Start, start again, finish: two runs, the first unfinished, the second timed."""
    book = _book()
    job = book.jobs["backup"]
    book.start(job, T0 + 1)
    book.start(job, T0 + 5)
    book.finish(job, T0 + 9)
    assert [(r.outcome, r.started, r.duration) for r in job.runs] == [
        ("unfinished", T0 + 1, None), ("success", T0 + 5, 4.0)]


def test_log_keeps_the_tail_within_the_bound() -> None:
    """A huge log keeps its last MAX_LOG_BYTES bytes."""
    book = _book()
    job = book.jobs["backup"]
    book.finish(job, T0, log="a" * 50_000 + "the end")
    assert (len(job.runs[-1].log), job.runs[-1].log[-7:]) == (MAX_LOG_BYTES, "the end")


def test_stale_deadlines_are_skipped_after_a_ping() -> None:
    """A success moves the deadline: the old one fires nothing."""
    book = _book()
    job = book.jobs["backup"]
    book.finish(job, T0 + 3000)
    assert book.check(T0 + 3900) == []
    assert book.next_deadline() == T0 + 3000 + 3900


def test_dirty_jobs_removed_names_and_finished_runs_are_handed_over_once() -> None:
    """take_dirty gives each change once, for the store."""
    book = _book()
    job = book.jobs["backup"]
    book.take_dirty()
    book.finish(job, T0 + 1, exit_code=1)
    changed, removed, finished = book.take_dirty()
    assert ([j.name for j in changed], removed, [(n, r.outcome) for n, r in finished]) == (
        ["backup"], [], [("backup", "fail")])
    book.remove("backup")
    assert book.take_dirty()[:2] == ([], ["backup"])
    assert book.take_dirty() == ([], [], [])


def test_to_json_shows_status_next_expected_and_runs() -> None:
    """The API's view: status word, next expected time, running_since, runs newest first."""
    book = _book()
    job = book.jobs["backup"]
    assert job.to_json(T0)["status"] == "new"
    book.finish(job, T0 + 10)
    book.start(job, T0 + 3600)
    body = job.to_json(T0 + 3601)
    assert {k: body[k] for k in ("status", "next_expected", "late_after", "running_since",
                                 "schedule")} == {
        "status": "running", "next_expected": T0 + 3610, "late_after": T0 + 3910,
        "running_since": T0 + 3600, "schedule": "every 1h"}
    assert [r["outcome"] for r in body["recent_runs"]] == ["success"]


def test_periods_read_as_people_write_them() -> None:
    assert [str(Period(s)) for s in (2, 0.5, 90, 3600, 43200, 86400, 90061)] == [
        "every 2s", "every 0.5s", "every 1m 30s", "every 1h", "every 12h", "every 1d",
        "every 1d 1h 1m 1s"]


def test_a_changed_schedule_moves_the_expected_time() -> None:
    """The next expected end is remembered per timing and reference: a new spec's timing,
    or a run's end, gives a new one."""
    book = _book(period=3600)
    job = book.jobs["backup"]
    assert job.expected() == T0 + 3600
    book.put(JobSpec("backup", UUID, Period(60), 300, 300, host="db1"), T0 + 5)
    assert (job.expected(), book.next_deadline()) == (T0 + 60, T0 + 360)
    book.finish(job, T0 + 100)
    assert job.expected() == T0 + 160
