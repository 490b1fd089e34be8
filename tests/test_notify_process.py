"""Notifications and DNS wired into the real ``twistd -n heartbeat`` process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.peers import HttpEndpoint, SmtpSink, within
from tests.support import TWISTD, wait_until


@pytest_twisted.ensureDeferred
async def test_shutdown_notice_by_mail_and_mattermost(server_factory: Any) -> None:
    """A host's SHUT reaches the SMTP server and the Mattermost webhook; status, journal agree."""
    sink = SmtpSink().start()
    webhook = HttpEndpoint().start()
    try:
        server = server_factory(
            email={"smtp_host": "127.0.0.1", "smtp_port": sink.port, "tls": "none",
                   "from_addr": "hb@example.com", "to": ["ops@example.com"]},
            pushsrv="mattermost", mattermost={"url": f"{webhook.url}/hooks/k3y"},
            notify_timeout=5.0)
        server.send({"ID": "HTB", "name": "web1"})
        server.send({"ID": "SHUT", "name": "web1"})
        mail = await within(sink.mails.get(), 10)
        posted = await within(webhook.requests.get(), 10)
    finally:
        await sink.stop()
        await webhook.stop()
    assert (mail.recipients, mail.message["Subject"], mail.message.get_content()) == (
        ["ops@example.com"], "[heartbeat] SHUT: web1", "web1 is shutting down (it sent SHUT).\n")
    assert json.loads(posted.body) == {
        "text": "**SHUT: web1**\nweb1 is shutting down (it sent SHUT).", "username": "heartbeat"}
    notify = wait_until(lambda: (n := server.get("/api/0/status")["notify"])
                        and sum(c["sent"] for c in n["channels"].values()) == 2 and n)
    assert sorted(notify["channels"]) == ["email", "mattermost"]
    assert notify["suppressed"] == {"first_sight": 1}
    sent = wait_until(lambda: (channels := sorted(
        e["event"]["channel"] for e in server.journal_lines()
        if e.get("event", {}).get("type") == "notify.sent")) and len(channels) == 2 and channels)
    assert sent == ["email", "mattermost"]


def run_twistd(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "hb.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\njournal_dir: {tmp_path}/journal\n"
                    f"hb_host: 127.0.0.1\nhbd_port: 1\n" + config)
    return subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(path)],
                          capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path)


def test_missing_nsupdate_stops_startup(tmp_path: Path) -> None:
    """dyndomains with an nsupdate_bin that does not exist: one line naming the key, exit 1."""
    result = run_twistd(tmp_path, "dyndomains: [dyn.example.com]\n"
                                  "nsupdate_bin: /nonexistent/nsupdate\n")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "heartbeat: nsupdate_bin: /nonexistent/nsupdate is not an executable file "
        "(Debian: apt install bind9-dnsutils)")


@pytest.mark.parametrize(("config", "line"), [
    ("dyndomains: [dyn.example.com]\nnsupdate_bin: /nonexistent/nsupdate\n",
     "heartbeat: nsupdate_bin: /nonexistent/nsupdate is not an executable file "
     "(Debian: apt install bind9-dnsutils)"),
    ("dyndomains: [dyn.example.com]\nnsupdate_bin: /bin/true\n"
     "nsupdate_key: /nonexistent/ddns.key\n",
     "heartbeat: nsupdate_key: cannot read /nonexistent/ddns.key"),
    ("email: {to: [a@example.com], ca_file: /nonexistent.pem}\n",
     "heartbeat: email.ca_file: cannot load /nonexistent.pem: "
     "[Errno 2] No such file or directory: '/nonexistent.pem'"),
], ids=["nsupdate_bin", "nsupdate_key", "ca_file"])
def test_check_flag_refuses_what_startup_refuses(tmp_path: Path, config: str, line: str) -> None:
    """--check fails with start-up's own line for a file start-up cannot use."""
    path = tmp_path / "hb.yaml"
    path.write_text(config)
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(path), "--check"],
                            capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr.strip().splitlines()[-1:]) == (
        1, "", [line])


def test_unreadable_ca_file_stops_startup(tmp_path: Path) -> None:
    """An email.ca_file that cannot be loaded stops start-up naming the key."""
    result = run_twistd(tmp_path, "email: {to: [a@example.com], ca_file: /nonexistent.pem}\n")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "heartbeat: email.ca_file: cannot load /nonexistent.pem: ")
