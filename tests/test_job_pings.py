"""``/ping/<uuid>`` through the whole server tree on a memory reactor: no login, every
action, the log kept, unknown UUIDs 404, the rate limit 429."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from heartbeat.config.server import JobConfig
from heartbeat.protocol import MAX_OUTPUT, DecodeError, decode
from heartbeat.server.jobs import MAX_LOG_BYTES
from heartbeat.server.web.pings import parse_action
from tests.memserver import InProcessServer

UUID = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    server = InProcessServer(tmp_path, jobs={
        "backup": JobConfig(period="1h", grace="5m", uuid=UUID, host="db1")}, ping_rate=5.0)
    yield server
    server.stop()


def test_actions_of_the_last_segment() -> None:
    assert [parse_action(a) for a in (None, "start", "fail", "0", "3", "255", "256", "-1",
                                      "\u0661", "0x1", "fails", "0003")] == [
        ("success", None), ("start", None), ("fail", None), ("exit", 0), ("exit", 3),
        ("exit", 255), None, None, None, None, None, None]


def test_start_then_exit_code_keeps_the_run_and_its_log(server: InProcessServer) -> None:
    job = server.parts.jobs.book.jobs["backup"]  # type: ignore[union-attr]
    assert server.request("GET", f"/ping/{UUID}/start") == (200, b"OK\n")
    server.reactor.advance(7)
    assert server.request("POST", f"/ping/{UUID.upper()}/2", b"line 1\nno space left\n") == (
        200, b"OK\n")
    (run,) = job.runs
    assert (run.outcome, run.exit_code, run.duration, run.log, run.source) == (
        "fail", 2, 7.0, "line 1\nno space left\n", "127.0.0.1")
    assert (job.level, job.reason) == ("CRITICAL", "failed (exit code 2)")
    assert server.request("POST", f"/ping/{UUID}", b"all good") == (200, b"OK\n")
    assert (job.level, job.runs[-1].log, job.runs[-1].duration) == ("OK", "all good", None)
    server.reactor.advance(1)
    assert server.request("GET", f"/ping/{UUID}/fail")[0] == 200
    assert (job.last_exit, job.level) == (1, "CRITICAL")


def test_a_long_log_keeps_its_tail(server: InProcessServer) -> None:
    job = server.parts.jobs.book.jobs["backup"]  # type: ignore[union-attr]
    body = b"x" * (3 * MAX_LOG_BYTES) + "the end é".encode()
    assert server.request("POST", f"/ping/{UUID}/0", body)[0] == 200
    log = job.runs[-1].log
    assert log.endswith("the end é") and len(log.encode()) <= MAX_LOG_BYTES


def test_unknown_or_malformed_uuids_and_actions_are_404(server: InProcessServer) -> None:
    for path in (f"/ping/{UUID[:-1]}0", "/ping/not-a-uuid", f"/ping/{UUID}/restart",
                 f"/ping/{UUID}/256"):
        server.reactor.advance(1)
        status, body = server.http("POST", path)
        assert (path, status, body["error"]) == (path, 404, "not_found")
    jobs = server.parts.jobs
    assert jobs is not None
    assert (jobs.unknown_pings, len(jobs.book.jobs["backup"].runs)) == (4, 0)


def test_pings_beyond_the_rate_are_refused_with_429(server: InProcessServer) -> None:
    """ping_rate 5: the sixth ping in one second is refused, known UUID or not."""
    answers = [server.request("GET", f"/ping/{UUID}")[0] for _ in range(4)]
    answers.append(server.request("GET", "/ping/not-a-uuid")[0])
    answers.append(server.request("GET", f"/ping/{UUID}")[0])
    assert answers == [200, 200, 200, 200, 404, 429]
    server.reactor.advance(1)
    assert server.request("GET", f"/ping/{UUID}")[0] == 200
    status, body = server.http("GET", "/api/0/status")
    assert (status, body["jobs"]["pings"], body["jobs"]["unknown_pings"],
            body["jobs"]["http"]["refused"]) == (200, 5, 1, 1)


def _job_datagram(**fields: object) -> bytes:
    return json.dumps({"ID": "JOB", "name": "db1", "job": "backup", **fields}).encode()


@pytest.mark.parametrize(("fields", "detail"), [
    ({"ping": "exit"}, "rc: required with ping exit"),
    ({"ping": "done"}, "ping: 'done'"),
    ({"ping": "exit", "rc": 256}, "rc: 256"),
    ({"ping": "exit", "rc": True}, "rc: True"),
    ({"ping": "start", "job": "a b"}, "job: 'a b'"),
    ({"ping": "start", "log": 5}, "log: a string is required"),
    ({"ping": "start", "uuid": 5}, "uuid: 5"),
])
def test_bad_job_datagrams_are_bad_fields(fields: dict[str, object], detail: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_job_datagram(**fields))
    assert (caught.value.reason, caught.value.detail) == ("bad_field", detail)


def test_a_job_datagram_keeps_the_tail_of_a_long_log() -> None:
    message = decode(_job_datagram(ping="exit", rc=3, log="x" * 9000 + "the end"))
    assert (len(message["log"]), message["log"][-7:], message["truncated"]) == (
        MAX_OUTPUT, "the end", True)


def test_job_datagrams_from_the_jobs_host_or_with_its_uuid(server: InProcessServer) -> None:
    """From db1 (the job's host): taken; from web1: only with the job's UUID; a JOB
    neither creates nor touches the sending host."""
    jobs = server.parts.jobs
    assert jobs is not None
    job = jobs.book.jobs["backup"]
    server.send(_job_datagram(ping="start"))
    server.reactor.advance(3)
    server.send(_job_datagram(ping="exit", rc=4, log="boom\n"))
    assert [(r.outcome, r.exit_code, r.duration, r.log, r.source) for r in job.runs] == [
        ("fail", 4, 3.0, "boom\n", "db1 (UDP)")]
    server.send(_job_datagram(name="web1", ping="success"))
    assert (len(job.runs), jobs.unknown_pings) == (1, 1)
    server.send(_job_datagram(name="web1", ping="success", uuid=UUID))
    assert (len(job.runs), job.level, jobs.unknown_pings) == (2, "OK", 1)
    server.send(_job_datagram(job="nightly", ping="success", uuid=UUID))
    assert jobs.unknown_pings == 2
    _, body = server.http("GET", "/api/0/status")
    assert (body["ingest"]["unknown_ids"], server.parts.registry.get("db1")) == ({}, None)
