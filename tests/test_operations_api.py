"""The API of maintenance windows, silences and acknowledgements: roles, bodies, what the
host and alert objects show, and what a restart keeps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from heartbeat.config.server import HostConfig
from tests.apistack import START, Stack, user

CPU = "cpu_monitor.cpu_percent"


@pytest.fixture
def stack(tmp_path: Any) -> Iterator[Stack]:
    stack = Stack(
        tmp_path,
        users={"alice": user("alice-password", admin=True), "olga": user("olga-password"),
               "mike": user("mike-password"), "bob": user("bob-password")},
        hosts={"web1": HostConfig(owner="olga", managers=["mike"], monitors=["bob"],
                                  tags=["linux"]),
               "db1": HostConfig(owner="olga")},
        thresholds={"cpu_monitor": {"cpu_percent": {"warning": 80, "critical": 90}}},
        config={"maintenance": [{"name": "weekly", "hosts": ["db*"], "cron": "0 3 * * sun",
                                 "duration": "1h", "timezone": "Europe/Berlin"}]},
    )
    stack.heartbeat("web1")
    stack.heartbeat("db1")
    yield stack
    stack.close()


def _kinds(stack: Stack, prefix: str) -> list[tuple[str, str]]:
    return [(e.kind, e.host) for e in stack.events if e.kind.startswith(prefix)]


def test_manager_makes_a_window_for_their_host(stack: Stack) -> None:
    """A manager's window for web1: made, journaled, listed; web1 is in maintenance."""
    mike = stack.token("mike")
    made = stack.call("POST", "/api/0/maintenance", {
        "hosts": ["web1"], "start": START - 60, "duration": "2h", "comment": "kernel"},
        token=mike)
    assert made.status == 201, made
    assert {k: made.json[k] for k in ("id", "hosts", "kind", "start", "end", "author",
                                      "source", "active")} == {
        "id": "1", "hosts": ["web1"], "kind": "once", "start": START - 60,
        "end": START + 7140, "author": "mike", "source": "api", "active": True}
    assert _kinds(stack, "maintenance.") == [("maintenance.created", "web1")]
    listed = stack.call("GET", "/api/0/maintenance", token=mike).json["windows"]
    assert [w["id"] for w in listed] == ["1"]  # the config's db* window covers none of his
    host = stack.call("GET", "/api/0/hosts/web1", token=stack.token("bob")).json
    assert (host["in_maintenance"], host["maintenance"]) == (True, ["1"])
    assert [(m["kind"], m["id"], m["until"]) for m in host["markers"]] == [
        ("maintenance", "1", START + 7140)]
    db1 = stack.call("GET", "/api/0/hosts/db1", token=stack.token("olga")).json
    assert (db1["in_maintenance"], db1["markers"]) == (False, [])


def test_window_roles(stack: Stack) -> None:
    """Monitors may not make windows, managers not by glob or tag nor for other hosts;
    admins may; a monitor of no host the window covers does not see it."""
    body = {"hosts": ["web1"], "start": START, "duration": 60}
    bob, mike, alice = stack.token("bob"), stack.token("mike"), stack.token("alice")
    assert stack.call("POST", "/api/0/maintenance", body, token=bob).status == 403
    assert stack.call("POST", "/api/0/maintenance", {**body, "hosts": ["web*"]},
                      token=mike).json["error"] == "forbidden"
    assert stack.call("POST", "/api/0/maintenance", {**body, "hosts": [], "tags": ["linux"]},
                      token=mike).status == 403
    assert stack.call("POST", "/api/0/maintenance", {**body, "hosts": ["db1"]},
                      token=mike).status == 403
    made = stack.call("POST", "/api/0/maintenance", {**body, "hosts": ["db*"]}, token=alice)
    assert made.status == 201
    assert stack.call("GET", f"/api/0/maintenance/{made.json['id']}", token=mike).status == 404
    assert stack.call("DELETE", f"/api/0/maintenance/{made.json['id']}",
                      token=mike).status == 404
    listed = stack.call("GET", "/api/0/maintenance", token=alice).json["windows"]
    assert [(w["id"], w["source"]) for w in listed] == [("weekly", "config"), ("1", "api")]


def test_replace_and_delete(stack: Stack) -> None:
    """PUT replaces a window (same id, author kept), DELETE ends it; config windows are
    read-only (409)."""
    mike = stack.token("mike")
    stack.call("POST", "/api/0/maintenance", {"hosts": ["web1"], "start": START + 60,
                                              "duration": 60}, token=mike)
    put = stack.call("PUT", "/api/0/maintenance/1", {
        "hosts": ["web1"], "cron": "30 2 * * *", "duration": "1h", "timezone": "UTC"},
        token=mike)
    assert (put.status, put.json["kind"], put.json["cron"], put.json["author"]) == (
        200, "recurring", "30 2 * * *", "mike")
    alice = stack.token("alice")
    assert stack.call("PUT", "/api/0/maintenance/weekly", {
        "hosts": ["db1"], "start": START, "duration": 5}, token=alice).json["error"] \
        == "config_window"
    assert stack.call("DELETE", "/api/0/maintenance/1", token=mike).json == {"deleted": "1"}
    assert stack.call("GET", "/api/0/maintenance/1", token=mike).status == 404
    assert _kinds(stack, "maintenance.") == [("maintenance.created", "web1"),
                                             ("maintenance.updated", "web1"),
                                             ("maintenance.deleted", "web1")]


def test_bad_window_names_the_field(stack: Stack) -> None:
    """What the window's parser refuses is a 400 naming the field; a body off the schema
    is refused before it."""
    alice = stack.token("alice")
    bad = stack.call("POST", "/api/0/maintenance", {"hosts": ["web1"], "start": START,
                                                    "end": START - 5}, token=alice)
    assert (bad.status, bad.json["error"], bad.json["detail"]) == (
        400, "invalid_body", "body: end: the window must end after it starts")
    zone = stack.call("POST", "/api/0/maintenance", {"hosts": ["web1"], "cron": "0 3 * * *",
                                                     "duration": "1h", "timezone": "Mars/Base"},
                      token=alice)
    assert (zone.status, zone.json["detail"].split(":")[:2]) == (400, ["body", " timezone"])
    huge = stack.call("POST", "/api/0/maintenance", {"hosts": ["web1"], "start": 10 ** 400,
                                                     "duration": 5}, token=alice)
    assert huge.status == 400
    extra = stack.call("POST", "/api/0/maintenance", {"hosts": ["web1"], "name": "x"},
                       token=alice)
    assert (extra.status, extra.json["error"]) == (400, "invalid_body")


def test_silence_by_a_manager_shown_and_ended(stack: Stack) -> None:
    """A manager silences web1's cpu alerts: the alert shows who silenced it; DELETE ends
    the silence, which stays listed as expired with who ended it."""
    mike = stack.token("mike")
    assert stack.call("POST", "/api/0/silences", {"host": "web1", "duration": "1h",
                                                  "comment": "x"},
                      token=stack.token("bob")).status == 403
    assert stack.call("POST", "/api/0/silences", {"host": "web*", "duration": "1h",
                                                  "comment": "x"}, token=mike).status == 403
    made = stack.call("POST", "/api/0/silences", {"host": "web1", "metric": "cpu_monitor.*",
                                                  "duration": "1h", "comment": "load test"},
                      token=mike)
    assert made.status == 201, made
    assert {k: made.json[k] for k in ("id", "host", "metric", "end", "author", "state")} == {
        "id": "1", "host": "web1", "metric": "cpu_monitor.*", "end": START + 3600,
        "author": "mike", "state": "active"}
    stack.send({"ID": "PLG", "name": "web1", "plugins": {"cpu_monitor": {"cpu_percent": 95}}})
    (alert,) = stack.call("GET", "/api/0/alerts", token=stack.token("bob")).json["alerts"]
    assert alert["silenced_by"] == {"id": "1", "author": "mike", "comment": "load test",
                                    "end": START + 3600}
    assert [m["kind"] for m in alert["markers"]] == ["silenced"]
    host = stack.call("GET", "/api/0/hosts/web1", token=mike).json
    assert host["silenced_by"] is None  # the silence is of cpu_monitor.*, not the host
    assert stack.call("GET", "/api/0/silences", token=stack.token("olga")).json == {
        "silences": [made.json]}  # olga owns web1
    stack.clock.advance(10)
    ended = stack.call("DELETE", "/api/0/silences/1", token=mike)
    assert (ended.status, ended.json["state"], ended.json["ended_by"], ended.json["end"]) == (
        200, "expired", "mike", START + 10)
    assert stack.call("DELETE", "/api/0/silences/9", token=mike).status == 404
    assert _kinds(stack, "silence.") == [("silence.created", "web1")]  # not started: timer


def test_acknowledging_an_alert(stack: Stack) -> None:
    """Managers acknowledge, monitors may not; the alert shows who; DELETE takes it back."""
    stack.send({"ID": "PLG", "name": "web1", "plugins": {"cpu_monitor": {"cpu_percent": 95}}})
    path = f"/api/0/hosts/web1/alerts/{CPU}/ack"
    assert stack.call("POST", path, {"comment": "on it"},
                      token=stack.token("bob")).status == 403
    assert stack.call("POST", "/api/0/hosts/web1/alerts/cpu_monitor.nothing/ack",
                      {"comment": "x"}, token=stack.token("mike")).status == 404
    acked = stack.call("POST", path, {"comment": "on it"}, token=stack.token("mike"))
    assert (acked.status, acked.json) == (201, {"host": "web1", "target": CPU, "by": "mike",
                                                "at": START, "comment": "on it",
                                                "level": "CRITICAL"})
    (alert,) = stack.call("GET", "/api/0/hosts/web1/alerts",
                          token=stack.token("bob")).json["alerts"]
    assert alert["acknowledged"] == {"by": "mike", "at": START, "comment": "on it",
                                     "level": "CRITICAL"}
    assert _kinds(stack, "ack.") == [("ack.added", "web1")]
    taken = stack.call("DELETE", path, token=stack.token("olga"))
    assert (taken.status, taken.json["removed"]) == (200, True)
    assert stack.call("DELETE", path, token=stack.token("olga")).status == 404


def test_acknowledging_a_down_host(stack: Stack) -> None:
    """Only a DOWN host is acknowledged; it shows who; its return ends the acknowledgement."""
    mike = stack.token("mike")
    up = stack.call("POST", "/api/0/hosts/web1/ack", {"comment": "x"}, token=mike)
    assert (up.status, up.json["error"]) == (409, "not_down")
    stack.clock.advance(60)
    for event in stack.registry.expire(stack.clock.seconds()):
        stack.bus.publish(event)
    acked = stack.call("POST", "/api/0/hosts/web1/ack", {"comment": "rebooting"}, token=mike)
    assert (acked.status, acked.json["target"], acked.json["level"]) == (201, None, "DOWN")
    host = stack.call("GET", "/api/0/hosts/web1", token=mike).json
    assert host["acknowledged"]["by"] == "mike"
    (problem,) = [p for p in stack.call("GET", "/api/0/alerts", token=mike).json["alerts"]
                  if p["host"] == "web1"]
    assert problem["acknowledged"]["comment"] == "rebooting"
    stack.heartbeat("web1")
    assert stack.call("GET", "/api/0/hosts/web1", token=mike).json["acknowledged"] is None
    assert _kinds(stack, "ack.") == [("ack.added", "web1"), ("ack.removed", "web1")]


def test_everything_survives_a_restart(stack: Stack) -> None:
    """Windows, silences and acknowledgements made through the API are there after a
    restart."""
    alice = stack.token("alice")
    stack.send({"ID": "PLG", "name": "web1", "plugins": {"cpu_monitor": {"cpu_percent": 95}}})
    stack.call("POST", "/api/0/maintenance", {"hosts": ["db1"], "start": START,
                                              "duration": "1d"}, token=alice)
    stack.call("POST", "/api/0/silences", {"host": "web1", "duration": "1h", "comment": "s"},
               token=alice)
    stack.call("POST", f"/api/0/hosts/web1/alerts/{CPU}/ack", {"comment": "a"}, token=alice)
    again = stack.restarted()
    try:
        alice = again.token("alice")
        assert [w["id"] for w in again.call("GET", "/api/0/maintenance",
                                            token=alice).json["windows"]] == ["weekly", "1"]
        assert [s["comment"] for s in again.call("GET", "/api/0/silences",
                                                 token=alice).json["silences"]] == ["s"]
        host = again.call("GET", "/api/0/hosts/db1", token=alice).json
        assert host["in_maintenance"] is True
        (alert,) = again.call("GET", "/api/0/alerts", token=alice).json["alerts"]
        assert (alert["acknowledged"]["comment"], alert["silenced_by"]["comment"]) == (
            "a", "s")
    finally:
        again.close()


def test_a_flapping_metric_is_marked(stack: Stack) -> None:
    """A metric swinging across its limit is marked flapping on its alert."""
    for value in (95, 50, 95, 50, 95, 50, 95, 50, 95):
        stack.send({"ID": "PLG", "name": "web1",
                    "plugins": {"cpu_monitor": {"cpu_percent": value}}})
        stack.clock.advance(1)
    (alert,) = stack.call("GET", "/api/0/alerts", token=stack.token("alice")).json["alerts"]
    assert (alert["flapping"], alert["markers"]) == (True, [{"kind": "flapping"}])
    assert [e.data["flapping"] for e in stack.events if e.kind == "alert.flapping"] == [True]


def test_a_follower_takes_no_change(stack: Stack) -> None:
    """A server that does not lead the servers sharing its store refuses changes (409
    not_leader) and still answers what it holds."""
    stack.server.operations.leading = False
    alice = stack.token("alice")
    refused = stack.call("POST", "/api/0/maintenance", {"hosts": ["web1"], "start": START,
                                                        "duration": 60}, token=alice)
    assert (refused.status, refused.json["error"]) == (409, "not_leader")
    assert stack.call("POST", "/api/0/silences", {"host": "web1", "duration": 60,
                                                  "comment": "x"}, token=alice).status == 409
    assert stack.call("GET", "/api/0/maintenance", token=alice).status == 200


@pytest.mark.parametrize("kind", ["PLG", "HTB"])
def test_a_metric_that_settles_stops_flapping(tmp_path: Any, kind: str) -> None:
    """A flapping metric (a plugin's, a heartbeat's RTT) that stays OK stops flapping,
    announced by the sample that takes it below the low mark though that sample raises
    no alert of its own."""
    limits = {"warning": 80, "critical": 90}
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True)},
                  thresholds={"cpu_monitor": {"cpu_percent": limits}, "rtt": {"web1": limits}})
    try:
        for value in (95, 50, 95, 50, 95, 50, 95, 50, 95, *[50] * 25):
            stack.send({"ID": "PLG", "name": "web1",
                        "plugins": {"cpu_monitor": {"cpu_percent": value}}} if kind == "PLG"
                       else {"ID": "HTB", "name": "web1", "interval": 30, "rtt": value})
            stack.clock.advance(1)
        changes = [e for e in stack.events if e.kind == "alert.flapping"]
        assert [e.data["flapping"] for e in changes] == [True, False]
        alerts = [e for e in stack.events if e.kind == "alert"]
        assert changes[1].ts > alerts[-1].ts  # after the recovery, from an OK sample
        assert stack.call("GET", "/api/0/alerts",
                          token=stack.token("alice")).json["alerts"] == []
    finally:
        stack.close()
