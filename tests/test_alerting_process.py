"""Threshold alerting on the real ``twistd -n heartbeat``: datagrams in, API and journal out."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest_twisted
import yaml
from twisted.internet import task

from tests.peers import SmtpSink, within
from tests.support import TWISTD, ServerProcess, wait_until

THRESHOLDS = {
    "cpu_monitor": {"cpu_percent": {"warning": 80.0, "critical": 90.0, "hysteresis": 0.1}},
    "rtt": {"web1": {"warning": 100.0, "critical": 500.0}},
}
PATH = "cpu_monitor.cpu_percent"


def cpu(server: ServerProcess, value: float) -> None:
    server.send({"ID": "PLG", "name": "web1", "plugins": {"cpu_monitor": {"cpu_percent": value}}})


def alert_events(server: ServerProcess) -> list[dict[str, Any]]:
    return [line["event"] for line in server.journal_lines()
            if line.get("event", {}).get("type") == "alert"]


def journal_caught_up(server: ServerProcess, marker: str) -> None:
    """Send a MSG and wait for it in the journal: everything before it is journaled too."""
    server.send({"ID": "MSG", "name": "web1", "text": marker})
    wait_until(lambda: any(line.get("message", {}).get("text") == marker
                           for line in server.journal_lines()))


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` without blocking the test's reactor (the SMTP sink runs on it)."""
    from twisted.internet import reactor

    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def api_alert(server: ServerProcess) -> tuple[str, Any] | None:
    alerts = server.get("/api/0/alerts")["alerts"]
    return (alerts[0]["level"], alerts[0]["value"]) if alerts else None


def test_alert_walks_through_every_state(server_factory: Any) -> None:
    """PLG datagrams drive WARNING, CRITICAL, de-escalation and recovery; the API and the
    journal show each step, and only de-escalation is not to be notified."""
    server = server_factory(thresholds=THRESHOLDS)
    server.send({"ID": "HTB", "name": "web1", "interval": 30})
    server.receive()
    for value, expected in ((85.0, ("WARNING", 85.0)), (95.0, ("CRITICAL", 95.0)),
                            (85.0, ("CRITICAL", 85.0)), (75.0, ("WARNING", 75.0)),
                            (50.0, None)):
        cpu(server, value)
        wait_until(lambda expected=expected, value=value: api_alert(server) == expected
                   and server.get("/api/0/hosts/web1/plugins")["plugins"]["cpu_monitor"][
                       "data"]["cpu_percent"] == value)
        if expected is not None:
            (alert,) = server.get("/api/0/hosts/web1/alerts")["alerts"]
            assert (alert["host"], alert["metric_path"], alert["level"]) == (
                "web1", PATH, expected[0])
        else:
            assert server.get("/api/0/hosts/web1/alerts") == {"host": "web1", "alerts": []}
    journal_caught_up(server, "end of walk")
    assert [(e["previous"], e["level"], e["notify"], e["message"])
            for e in alert_events(server)] == [
        ("OK", "WARNING", True, "WARNING: web1 - cpu_monitor.cpu_percent = 85.0"),
        ("WARNING", "CRITICAL", True, "CRITICAL: web1 - cpu_monitor.cpu_percent = 95.0"),
        ("CRITICAL", "WARNING", False, "WARNING: web1 - cpu_monitor.cpu_percent = 75.0"),
        ("WARNING", "OK", True,
         "RECOVERED: web1 - cpu_monitor.cpu_percent = 50.0 (WARNING -> OK)"),
    ]
    status = server.get("/api/0/status")["alerting"]
    assert status == {"active": {"CRITICAL": 0, "WARNING": 0, "UNKNOWN": 0}, "published": 4,
                      "reminders": 0}


@pytest_twisted.ensureDeferred
async def test_alerts_reach_a_real_smtp_server(server_factory: Any) -> None:
    """CRITICAL and RECOVERED are mailed (each on its own, in any order); a de-escalation
    and an unwatched host's alert are not (the notifier follows the notify flag)."""
    sink = SmtpSink().start()
    try:
        server = server_factory(
            email={"smtp_host": "127.0.0.1", "smtp_port": sink.port, "tls": "none",
                   "from_addr": "hb@example.com", "to": ["ops@example.com"]},
            notify_timeout=5.0, thresholds=THRESHOLDS, hosts={"lab": {"watch": False}})
        server.send({"ID": "PLG", "name": "lab",
                     "plugins": {"cpu_monitor": {"cpu_percent": 99.0}}})
        for value, expected in ((95.0, ["CRITICAL"]), (75.0, ["WARNING"]), (50.0, [])):
            cpu(server, value)
            await until(lambda expected=expected: [
                a["level"] for a in server.get("/api/0/hosts/web1/alerts")["alerts"]] == expected)
        mails = [await within(sink.mails.get(), 10) for _ in range(2)]
        await until(lambda: (n := server.get("/api/0/status")["notify"])["events"] == 4
                    and n["channels"]["email"]["sent"] == 2)
        notify = server.get("/api/0/status")["notify"]
    finally:
        await sink.stop()
    assert sorted((m.message["Subject"], m.message.get_content()) for m in mails) == [
        ("[heartbeat] CRITICAL: web1", "CRITICAL: web1 - cpu_monitor.cpu_percent = 95.0\n"),
        ("[heartbeat] RECOVERED: web1",
         "RECOVERED: web1 - cpu_monitor.cpu_percent = 50.0 (WARNING -> OK)\n"),
    ]
    assert sink.mails.pending == []
    # lab's CRITICAL and web1's de-escalation reached the notifier and were skipped.
    assert (notify["suppressed"], notify["channels"]["email"]["sent"]) == (
        {"alert_not_notified": 2}, 2)


def test_rtt_alert_from_heartbeats(server_factory: Any) -> None:
    """An HTB whose rtt passes thresholds.rtt.<host> raises rtt.<host>; a later one recovers."""
    server = server_factory(thresholds=THRESHOLDS)
    server.send({"ID": "HTB", "name": "web1", "interval": 30, "rtt": 520.1})
    server.receive()
    alerts = wait_until(lambda: server.get("/api/0/alerts")["alerts"])
    assert [(a["metric_path"], a["level"], a["message"]) for a in alerts] == [
        ("rtt.web1", "CRITICAL", "CRITICAL: web1 - rtt.web1 = 520.1")]
    server.send({"ID": "HTB", "name": "web1", "interval": 30, "rtt": 45.2})
    server.receive()
    wait_until(lambda: server.get("/api/0/alerts")["alerts"] == [])


def test_alert_state_survives_restart_without_notifying(server_factory: Any, tmp_path) -> None:
    """After a restart the CRITICAL alert is still listed with its since, and the same level
    again produces no new ALERT event (so nothing is notified twice)."""
    server = server_factory(thresholds=THRESHOLDS)
    cpu(server, 95.0)
    (before,) = wait_until(lambda: server.get("/api/0/alerts")["alerts"])
    assert before["level"] == "CRITICAL"
    journal_caught_up(server, "before restart")
    server.stop()
    again = server_factory(tmp_path, hb_port=server.udp_port, hbd_port=server.http_port,
                           ws_port=server.ws_port, thresholds=THRESHOLDS)
    assert again.get("/api/0/alerts")["alerts"] == [before]
    cpu(again, 97.0)
    wait_until(lambda: api_alert(again) == ("CRITICAL", 97.0))
    (after,) = again.get("/api/0/alerts")["alerts"]
    assert (after["since"], after["last_notified"]) == (before["since"], before["last_notified"])
    journal_caught_up(again, "after restart")
    assert [(e["level"], e["notify"]) for e in alert_events(again)] == [("CRITICAL", True)]


def test_bad_threshold_stops_startup_naming_key(tmp_path) -> None:
    """A bad rule stops twistd with one line naming the file and the rule's key path."""
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"thresholds": {"cpu_monitor": {"cpu_percent": {
        "warning": 95, "critical": 90}}}}))
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config)],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path,
                            check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"heartbeat: config error: {config}: thresholds.cpu_monitor.cpu_percent.warning: "
        f"warning 95 is above critical 90: with operator '>' it must be reached first")
