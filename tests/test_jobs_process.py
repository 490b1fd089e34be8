"""Cron jobs against the real ``twistd -n heartbeat``: a late job, a failed run and its
recovery reach a real SMTP server on loopback as exactly three e-mails; a failure held by
its host's maintenance window is one mail when the window ends; ``heartbeat send --job``
runs the commands and reports them over HTTP and over UDP."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task

from tests.agent_process import HEARTBEAT
from tests.peers import SmtpSink, within
from tests.support import eventually, wait_until
from tests.test_operations_process import Inbox, notify, ok, pause, settled

UUID = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"


def run_job(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HEARTBEAT, "send", *args], check=False, capture_output=True,
                          text=True, timeout=60, cwd=cwd,
                          env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"})


@pytest_twisted.ensureDeferred
async def test_late_failed_and_recovered_jobs_mail_exactly_once_each(
        server_factory: Any, tmp_path: Path) -> None:
    sink = SmtpSink().start()
    try:
        server = server_factory(
            email={"smtp_host": "127.0.0.1", "smtp_port": sink.port, "tls": "none",
                   "from_addr": "hb@example.com", "to": ["ops@example.com"]},
            notify_timeout=5.0,
            jobs={"backup": {"period": "1h", "grace": "10m", "uuid": UUID, "host": "db1"},
                  "report": {"period": 2, "grace": 1}})
        url = f"http://127.0.0.1:{server.http_port}/ping/{UUID}"
        # A failed run over HTTP: its output passes through, its exit code is ours.
        failed = run_job(tmp_path, "--job", "backup", "--url", url, "--",
                         "sh", "-c", "echo dumping; echo 'disk full' >&2; exit 3")
        assert (failed.returncode, failed.stdout, failed.stderr) == (3, "dumping\ndisk full\n",
                                                                     "")
        first = await within(sink.mails.get(), 15)
        # The recovery over UDP, as the job's own host.
        ok = run_job(tmp_path, "--job", "backup", "--name", "db1", "--port",
                     str(server.udp_port), "127.0.0.1", "--", "sh", "-c", "echo all done")
        assert (ok.returncode, ok.stdout, ok.stderr) == (0, "all done\n", "")
        mails = [first, await within(sink.mails.get(), 15), await within(sink.mails.get(), 15)]
        for _ in range(1000):  # the sink answers on this reactor: wait without blocking it
            notify = server.get("/api/0/status")["notify"]
            if notify["channels"]["email"]["sent"] == 3:
                break
            await task.deferLater(reactor, 0.02)
        jobs = server.get("/api/0/jobs")["jobs"]
    finally:
        await sink.stop()
    by_subject = {m.message["Subject"]: m.message.get_content() for m in mails}
    assert sorted(by_subject) == ["[heartbeat] FAILED: job backup", "[heartbeat] LATE: job report",
                                  "[heartbeat] RECOVERED: job backup"]
    assert by_subject["[heartbeat] FAILED: job backup"].startswith(
        "Job backup on db1 failed: its last run ended with exit code 3.\nNo successful run yet."
        "\nThe end of its output:\ndumping\ndisk full")
    assert by_subject["[heartbeat] LATE: job report"].startswith("Job report is late: a run "
                                                                 "was due to end by ")
    assert "is OK again" in by_subject["[heartbeat] RECOVERED: job backup"]
    assert (sink.mails.pending, notify["events"], notify["channels"]["email"]["sent"]) == (
        [], 3, 3)
    backup, report = jobs
    assert (backup["level"], backup["last_run"]["source"], backup["last_exit_code"]) == (
        "OK", "db1 (UDP)", 0)
    assert (report["level"], report["status"]) == ("CRITICAL", "late")
    runs = server.get("/api/0/jobs/backup")["runs"]
    assert [(r["outcome"], r["exit_code"], r["log"]) for r in runs] == [
        ("success", 0, "all done\n"), ("fail", 3, "dumping\ndisk full\n")]
    assert all(r["duration"] is not None and r["duration"] >= 0 for r in runs)
    pings = [e["event"]["ping"] for e in server.journal_lines()
             if e.get("event", {}).get("type") == "job.ping"]
    assert pings == ["start", "fail", "start", "success"]


@pytest_twisted.ensureDeferred
async def test_a_failure_held_by_maintenance_mails_once_when_the_window_ends(
        server_factory: Any) -> None:
    """A job on db1 fails inside db1's maintenance window: no mail while it is open; still
    failed when the window ends: one STILL CRITICAL mail, and nothing else."""
    inbox = Inbox()
    try:
        server = server_factory(jobs={"backup": {"period": "1h", "grace": "10m", "uuid": UUID,
                                                 "host": "db1"}}, **inbox.email())
        start = time.time()
        window = ok(server, "POST", "/api/0/maintenance", {
            "hosts": ["db1"], "start": start - 1, "duration": "1h", "comment": "restore"})
        assert server.request("POST", f"/ping/{UUID}/2")[0] == 200
        assert await eventually(lambda: notify(server)["suppressed"].get("maintenance") == 1)
        assert inbox.subjects == []
        ok(server, "PUT", f"/api/0/maintenance/{window['id']}", {
            "hosts": ["db1"], "start": start - 1, "end": time.time() + 1})
        assert await eventually(lambda: inbox.subjects)
        assert await eventually(lambda: settled(server))
        await pause(1.0)
        assert inbox.subjects == ["STILL CRITICAL: job backup"]
        body = inbox.mails[0].message.get_content()
        assert body.startswith("Job backup on db1 is still CRITICAL (failed (exit code 2)) "
                               "since ")
        assert "notices were held during maintenance '1' (restore), which ended." in body
        assert notify(server)["suppressed"] == {"maintenance": 1}
    finally:
        await inbox.sink.stop()


def test_send_job_says_what_is_missing(tmp_path: Path) -> None:
    """--job without a command, or with neither --url nor a server: one line, exit 2; a
    command that does not exist: 127 and its reason, after a start ping that failed."""
    assert run_job(tmp_path, "--job", "x", "127.0.0.1").stderr == (
        "heartbeat: --job needs the command to run after --, e.g. heartbeat send --job backup "
        "SERVER -- /usr/local/bin/backup\n")
    nowhere = run_job(tmp_path, "--job", "x", "--", "true")
    assert (nowhere.returncode, nowhere.stderr) == (
        2, "heartbeat: --job reports over HTTP (--url, the job's ping URL) or over UDP "
           "(SERVER...): give one of them\n")
    missing = run_job(tmp_path, "--job", "x", "--url", "http://127.0.0.1:9/ping/" + UUID,
                      "--", "/nonexistent/backup")
    lines = missing.stderr.splitlines()
    assert missing.returncode == 127
    assert lines[0].startswith("heartbeat: job x: the start ping failed: http://127.0.0.1:9/")
    assert lines[1] == ("heartbeat: cannot run /nonexistent/backup: No such file or directory")


def test_job_datagrams_are_signed_like_the_hosts_others(server_factory: Any,
                                                        tmp_path: Path) -> None:
    """require_signed: an unsigned JOB from the job's host is dropped as unsigned, the same
    run sent with the fleet key (heartbeat send reads it from ~/.hbc.yaml) is taken."""
    key = "fleet-secret-0123456789abcdef"
    server = server_factory(keys={"fleet": key}, require_signed=True,
                            jobs={"backup": {"period": "1h", "host": "db1"}})
    port = str(server.udp_port)
    unsigned = run_job(tmp_path, "--job", "backup", "--name", "db1", "--port", port,
                       "127.0.0.1", "--", "true")
    assert unsigned.returncode == 0  # sent; the server drops it
    wait_until(lambda: server.get("/api/0/status")["ingest"]["dropped"].get("unsigned", 0) >= 2)
    ingest = server.get("/api/0/status")["ingest"]
    assert ingest["dropped"]["unsigned"] == 2  # its start and its end
    assert server.get("/api/0/jobs/backup")["runs"] == []
    (tmp_path / ".hbc.yaml").write_text(f"key: {key}\nkey_id: fleet\n")
    signed = run_job(tmp_path, "--job", "backup", "--name", "db1", "--port", port,
                     "127.0.0.1", "--", "sh", "-c", "echo signed; exit 5")
    assert (signed.returncode, signed.stdout) == (5, "signed\n")
    runs = wait_until(lambda: server.get("/api/0/jobs/backup")["runs"])
    assert [(r["outcome"], r["exit_code"], r["log"], r["source"]) for r in runs] == [
        ("fail", 5, "signed\n", "db1 (UDP)")]
