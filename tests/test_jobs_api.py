"""GET /api/0/jobs and /api/0/jobs/<name>: levels, next expected times, runs; a job is
seen as its host is, and its UUID only by those who may change that host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from heartbeat.config.server import HostConfig, JobConfig
from tests.apistack import START, Stack, user

UUID = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"
JOBS = {"backup": JobConfig(period="1h", grace="5m", uuid=UUID, host="db1",
                            description="nightly dump"),
        "report": JobConfig(schedule="0 6 * * 1", timezone="UTC", grace="1h", host="web1"),
        "orphan": JobConfig(period="1d")}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password"), "carol": user("carol-password"),
                                   "dave": user("dave-password")},
                  hosts={"db1": HostConfig(owner="bob", monitors=["carol"]),
                         "web1": HostConfig(owner="carol")},
                  config={"jobs": JOBS})
    yield stack
    stack.close()


def _ping(stack: Stack, path: str, body: bytes | None = None) -> int:
    return stack.call("POST" if body is not None else "GET", path, raw=body).status


def test_list_shows_level_schedule_and_next_expected(stack: Stack) -> None:
    stack.clock.advance(10)
    assert _ping(stack, f"/ping/{UUID}/start") == 200
    stack.clock.advance(20)
    assert _ping(stack, f"/ping/{UUID}/3", b"error: disk full\n") == 200
    body = stack.call("GET", "/api/0/jobs", token=stack.token("alice")).json
    assert [j["name"] for j in body["jobs"]] == ["backup", "orphan", "report"]
    assert body["levels"] == {"OK": 2, "WARNING": 0, "CRITICAL": 1}
    backup = body["jobs"][0]
    assert {k: backup[k] for k in ("host", "description", "schedule", "status", "level",
                                   "reason", "last_exit_code", "next_expected", "late_after",
                                   "last_duration", "uuid", "ping_url")} == {
        "host": "db1", "description": "nightly dump", "schedule": "every 1h",
        "status": "failed", "level": "CRITICAL", "reason": "failed (exit code 3)",
        "last_exit_code": 3, "next_expected": START + 30 + 3600,
        "late_after": START + 30 + 3900, "last_duration": 20.0, "uuid": UUID,
        "ping_url": f"/ping/{UUID}"}
    assert backup["last_run"] == {"started": START + 10, "ended": START + 30, "outcome": "fail",
                                  "duration": 20.0, "exit_code": 3, "source": "127.0.0.1"}
    report = body["jobs"][2]
    assert (report["schedule"], report["status"]) == ("0 6 * * 1 (UTC)", "new")


def test_detail_has_the_runs_newest_first_with_their_logs(stack: Stack) -> None:
    for code, text in ((0, b"ok 1"), (2, b"bad"), (0, b"ok 2")):
        stack.clock.advance(60)
        assert _ping(stack, f"/ping/{UUID}/{code}", text) == 200
    body = stack.call("GET", "/api/0/jobs/backup?limit=2", token=stack.token("bob")).json
    assert [(r["exit_code"], r["log"], r["outcome"]) for r in body["runs"]] == [
        (0, "ok 2", "success"), (2, "bad", "fail")]
    assert (body["level"], body["last_success"]) == ("OK", START + 180)
    assert stack.call("GET", "/api/0/jobs/backup?limit=0",
                      token=stack.token("bob")).status == 400


def test_a_job_is_seen_as_its_host_and_its_uuid_by_managers_and_up(stack: Stack) -> None:
    """bob owns db1 (backup, with its UUID); carol monitors db1 (backup, no UUID) and owns
    web1; dave sees nothing; a job without a host: admins (and the default owner)."""
    def seen(name: str) -> dict[str, str | None]:
        jobs = stack.call("GET", "/api/0/jobs", token=stack.token(name)).json["jobs"]
        return {j["name"]: j["uuid"] and "uuid" for j in jobs}

    assert seen("alice") == {"backup": "uuid", "orphan": "uuid", "report": "uuid"}
    assert seen("bob") == {"backup": "uuid"}
    assert seen("carol") == {"backup": None, "report": "uuid"}
    assert seen("dave") == {}
    assert stack.call("GET", "/api/0/jobs/backup", token=stack.token("dave")).status == 404
    assert stack.call("GET", "/api/0/jobs/orphan", token=stack.token("bob")).status == 404
    assert stack.call("GET", "/api/0/jobs/nope", token=stack.token("alice")).status == 404
    assert stack.call("GET", "/api/0/jobs").status == 401


def test_the_settings_view_masks_a_configured_uuid(stack: Stack) -> None:
    """GET /api/0/config shows the jobs with their uuid masked (a UUID lets anyone ping)."""
    response = stack.call("GET", "/api/0/config", token=stack.token("alice"))
    assert response.status == 200 and UUID not in response.raw.decode()
    jobs = {row["key"]: row for row in response.json["keys"]}["jobs"]["value"]
    assert (jobs["backup"]["uuid"], jobs["backup"]["host"], jobs["orphan"]["uuid"]) == (
        "********", "db1", None)
