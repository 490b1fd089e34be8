"""The alert endpoints of /api/0 in memory: datagrams in through ingest, JSON out, by role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from heartbeat.config.server import HostConfig
from tests.apistack import Stack, user

THRESHOLDS = {"cpu_monitor": {"cpu_percent": {"warning": 80.0, "critical": 90.0}},
              "memory_monitor": {"percent": {"warning": 85.0, "critical": 95.0}}}
PROFILES = {"tight": {"thresholds": {"cpu_monitor": {"cpu_percent": {
    "warning": 60.0, "critical": 75.0}}}}}
HOSTS = {"web": HostConfig(owner="alice", monitors=["mon"]),
         "db": HostConfig(owner="alice", threshold_config="tight"),
         "spare": HostConfig(owner="alice", monitors=["mon"])}


def plugins(stack: Stack, host: str, data: dict[str, Any]) -> None:
    stack.send({"ID": "PLG", "name": host, "plugins": data})


@pytest.fixture
def stack(tmp_path: Any) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "mon": user("mon-password")},
                  hosts=HOSTS, thresholds=THRESHOLDS, threshold_configs=PROFILES)
    plugins(stack, "web", {"cpu_monitor": {"cpu_percent": 85.0},
                           "memory_monitor": {"percent": 96.0}})
    stack.clock.advance(10)
    plugins(stack, "db", {"cpu_monitor": {"cpu_percent": 70.0}})
    plugins(stack, "idle", {"cpu_monitor": {"cpu_percent": 1.0}})
    yield stack
    stack.close()


def get(stack: Stack, path: str, viewer: str = "alice") -> tuple[int, Any]:
    response = stack.call("GET", path, token=stack.token(viewer))
    return response.status, response.json


T0 = 1_800_000_000.0
UNCOVERED = {"in_maintenance": False, "maintenance": [], "silenced_by": None,
             "acknowledged": None, "markers": []}
"""No maintenance window, silence or acknowledgement covers it (test_operations_api)."""
METRIC = {"kind": "metric", "state": "UNKNOWN", "stale": False, **UNCOVERED}
WEB_MEMORY = {**METRIC, "host": "web", "metric_path": "memory_monitor.percent", "level": "CRITICAL",
              "value": 96.0, "threshold_value": 95.0,
              "message": "CRITICAL: web - memory_monitor.percent = 96.0", "since": T0,
              "last_notified": T0, "flapping": False,
              "recovering": None}
WEB_CPU = {**METRIC, "host": "web", "metric_path": "cpu_monitor.cpu_percent", "level": "WARNING",
           "value": 85.0, "threshold_value": 80.0,
           "message": "WARNING: web - cpu_monitor.cpu_percent = 85.0", "since": T0,
           "last_notified": T0, "flapping": False,
           "recovering": None}
DB_CPU = {**METRIC, "host": "db", "metric_path": "cpu_monitor.cpu_percent", "level": "WARNING",
          "value": 70.0, "threshold_value": 60.0,
          "message": "WARNING: db - cpu_monitor.cpu_percent = 70.0", "since": T0 + 10,
          "last_notified": T0 + 10, "flapping": False,
          "recovering": None}
SUMMARY = {"CRITICAL": 1, "WARNING": 2, "UNKNOWN": 0, "stale": 0, "hosts": 0}


def test_all_alerts_most_severe_first(stack: Stack) -> None:
    """GET /api/0/alerts lists every active alert with a summary by level."""
    assert get(stack, "/api/0/alerts") == (200, {"alerts": [WEB_MEMORY, DB_CPU, WEB_CPU],
                                                 "total": 3, "summary": SUMMARY})


@pytest.mark.parametrize(("query", "expected"), [
    ("CRITICAL", [WEB_MEMORY]), ("warning", [DB_CPU, WEB_CPU]), ("UNKNOWN", []),
    ("CRITICAL,WARNING", [WEB_MEMORY, DB_CPU, WEB_CPU]),
])
def test_level_filter(stack: Stack, query: str, expected: list[dict[str, Any]]) -> None:
    """?level= filters the list (case-insensitive, comma-separated); the summary stays whole."""
    assert get(stack, f"/api/0/alerts?level={query}") == (200, {
        "alerts": expected, "total": len(expected), "summary": SUMMARY})


def test_limit_gives_the_head_of_the_list_and_the_total(stack: Stack) -> None:
    """?limit=N: the first N problems of the (filtered) list, with the total it holds and
    the whole summary; limit=0 only counts (the navigation's pie asks that)."""
    assert get(stack, "/api/0/alerts?limit=2") == (200, {
        "alerts": [WEB_MEMORY, DB_CPU], "total": 3, "summary": SUMMARY})
    assert get(stack, "/api/0/alerts?limit=0") == (200, {
        "alerts": [], "total": 3, "summary": SUMMARY})
    assert get(stack, "/api/0/alerts?level=warning&limit=1") == (200, {
        "alerts": [DB_CPU], "total": 2, "summary": SUMMARY})
    for bad in ("-1", "5001", "x"):
        assert get(stack, f"/api/0/alerts?limit={bad}")[0] == 400


def test_bad_level_filter(stack: Stack) -> None:
    """An unknown level is a 400 naming the accepted ones."""
    assert get(stack, "/api/0/alerts?level=OK") == (400, {
        "error": "bad_request", "detail": "level must be one or more of CRITICAL, UNKNOWN, "
                                          "WARNING"})


def test_alerts_are_filtered_by_role(stack: Stack) -> None:
    """A monitor of one host lists and counts only that host's alerts."""
    assert get(stack, "/api/0/alerts", "mon") == (200, {
        "alerts": [WEB_MEMORY, WEB_CPU], "total": 2,
        "summary": {"CRITICAL": 1, "WARNING": 1, "UNKNOWN": 0, "stale": 0, "hosts": 0}})


def test_status_counts_only_visible_alerts(stack: Stack) -> None:
    """/api/0/status counts a non-admin's active alerts over the hosts they can see."""
    assert get(stack, "/api/0/status")[1]["alerting"]["active"] == {
        "CRITICAL": 1, "WARNING": 2, "UNKNOWN": 0}
    assert get(stack, "/api/0/status", "mon")[1]["alerting"]["active"] == {
        "CRITICAL": 1, "WARNING": 1, "UNKNOWN": 0}


def test_repeated_level_arguments_add_up(stack: Stack) -> None:
    """?level=a&level=b filters like ?level=a,b."""
    assert get(stack, "/api/0/alerts?level=critical&level=warning") == get(
        stack, "/api/0/alerts?level=CRITICAL,WARNING")
    assert len(get(stack, "/api/0/alerts?level=critical&level=warning")[1]["alerts"]) == 3


def test_alerts_need_a_login(stack: Stack) -> None:
    """With users configured, the alert list without a token is a 401."""
    assert stack.call("GET", "/api/0/alerts").status == 401


def test_host_alerts(stack: Stack) -> None:
    """GET /api/0/hosts/<name>/alerts lists that host's alerts; none is an empty list."""
    assert get(stack, "/api/0/hosts/web/alerts") == (200, {"host": "web",
                                                           "alerts": [WEB_MEMORY, WEB_CPU]})
    assert get(stack, "/api/0/hosts/idle/alerts") == (200, {"host": "idle", "alerts": []})
    assert get(stack, "/api/0/hosts/db/alerts", "mon") == (404, {
        "error": "not_found", "detail": "no host named 'db'"})
    assert get(stack, "/api/0/hosts/nobody/alerts")[0] == 404


def test_alerts_follow_new_samples(stack: Stack) -> None:
    """A recovery through the ingest path removes the alert from the API."""
    plugins(stack, "web", {"cpu_monitor": {"cpu_percent": 10.0},
                           "memory_monitor": {"percent": 10.0}})
    assert get(stack, "/api/0/hosts/web/alerts") == (200, {"host": "web", "alerts": []})
    kinds = [(e.data["metric_path"], e.data["level"]) for e in stack.events
             if e.kind == "alert" and e.host == "web"]
    assert kinds[-2:] == [("cpu_monitor.cpu_percent", "OK"), ("memory_monitor.percent", "OK")]


def test_host_thresholds_after_profiles(stack: Stack) -> None:
    """GET /api/0/hosts/<name>/thresholds shows the rules in effect after profiles."""
    status, body = get(stack, "/api/0/hosts/db/thresholds")
    assert status == 200
    assert (body["host"], body["profiles"]) == ("db", ["tight"])
    assert body["thresholds"]["cpu_monitor"] == {"cpu_percent": {
        "operator": ">", "warning": 60.0, "critical": 75.0, "hysteresis": 0.02}}
    assert body == stack.alerts.rules.effective("db")


def test_thresholds_of_a_configured_host_not_yet_seen(stack: Stack) -> None:
    """A host in hosts: has thresholds before its first message; others are 404."""
    status, body = get(stack, "/api/0/hosts/spare/thresholds", "mon")
    assert (status, body["profiles"]) == (200, [])
    assert get(stack, "/api/0/hosts/db/thresholds", "mon")[0] == 404
    assert get(stack, "/api/0/hosts/ghost/thresholds")[0] == 404


def test_threshold_configuration(stack: Stack) -> None:
    """GET /api/0/thresholds shows base rules, every profile, and who uses which (visible)."""
    status, body = get(stack, "/api/0/thresholds")
    assert status == 200
    assert body["profiles"] == {"tight": {"cpu_monitor": {"cpu_percent": {
        "operator": ">", "warning": 60.0, "critical": 75.0, "hysteresis": 0.02}}}}
    assert (body["hosts"], body["renotify_interval"]) == ({"db": ["tight"]}, 3600.0)
    assert sorted(body["thresholds"]) == ["cpu_monitor", "memory_monitor", "nagios_runner",
                                          "zfs_monitor"]
    assert get(stack, "/api/0/thresholds", "mon")[1]["hosts"] == {}


def test_index_and_openapi_list_the_endpoints(stack: Stack) -> None:
    """The API index and the OpenAPI document name the alert endpoints."""
    index = stack.call("GET", "/api/0").json
    assert {"GET /api/0/alerts", "GET /api/0/hosts/{name}/alerts",
            "GET /api/0/hosts/{name}/thresholds", "GET /api/0/thresholds"} <= set(
        index["endpoints"])


def test_alert_states_survive_a_restart(stack: Stack) -> None:
    """The same state directory opened again lists the same alerts, with no new event."""
    before = get(stack, "/api/0/alerts")
    again = stack.restarted()
    try:
        assert get(again, "/api/0/alerts") == before
        plugins(again, "web", {"cpu_monitor": {"cpu_percent": 86.0}})
        assert [e for e in again.events if e.kind == "alert"] == []
    finally:
        again.close()


def _down(stack: Stack, host: str, *alive: str) -> None:
    """``host`` heard from, then silent past interval + grace; ``alive`` hosts go on."""
    stack.heartbeat(host)
    stack.clock.advance(41)
    for name in alive:
        stack.heartbeat(name)
    for event in stack.registry.expire(stack.clock.seconds()):
        stack.bus.publish(event)


def test_a_down_host_is_a_problem_and_its_alerts_stale(stack: Stack) -> None:
    """A DOWN host is a CRITICAL problem of kind host, first; its metric alerts go stale."""
    _down(stack, "web", "db")
    down_since = stack.clock.seconds()
    web_down = {"kind": "host", "host": "web", "level": "CRITICAL", "state": "DOWN",
                "reason": "timeout", "metric_path": None, "value": None,
                "threshold_value": None, "message": "CRITICAL: web is DOWN (timeout)",
                "since": down_since, "last_notified": None, "stale": False, **UNCOVERED}
    stale = {"state": "DOWN", "stale": True}
    assert get(stack, "/api/0/alerts") == (200, {
        "alerts": [web_down, {**DB_CPU, "state": "UP"}, {**WEB_MEMORY, **stale},
                   {**WEB_CPU, **stale}], "total": 4,
        "summary": {"CRITICAL": 1, "WARNING": 1, "UNKNOWN": 0, "stale": 2, "hosts": 1}})
    assert get(stack, "/api/0/alerts?kind=host") == (200, {
        "alerts": [web_down], "total": 1,
        "summary": {"CRITICAL": 1, "WARNING": 1, "UNKNOWN": 0, "stale": 2, "hosts": 1}})
    assert get(stack, "/api/0/alerts?kind=metric&level=critical")[1]["alerts"] == [
        {**WEB_MEMORY, **stale}]
    assert get(stack, "/api/0/hosts/web/alerts") == (200, {
        "host": "web", "alerts": [web_down, {**WEB_MEMORY, **stale}, {**WEB_CPU, **stale}]})
    assert get(stack, "/api/0/alerts", "mon")[1]["summary"] == {
        "CRITICAL": 1, "WARNING": 0, "UNKNOWN": 0, "stale": 2, "hosts": 1}


def test_every_limit_is_the_head_of_the_whole_list(stack: Stack) -> None:
    """With hosts DOWN (chosen per state from each state's first names) and alerts, current
    and stale, any ``limit`` with any filter is the head of the unlimited answer, with the
    same total and summary."""
    for name in ("x3", "a1", "m2", "b7"):
        stack.heartbeat(name)
    _down(stack, "web", "db")
    for query in ("", "level=critical", "kind=host", "kind=metric", "level=warning,critical"):
        whole = get(stack, f"/api/0/alerts?{query}")[1]
        assert whole["total"] == len(whole["alerts"])
        for limit in range(len(whole["alerts"]) + 2):
            assert get(stack, f"/api/0/alerts?{query}&limit={limit}") == (200, {
                **whole, "alerts": whole["alerts"][:limit]})
    assert [a["host"] for a in get(stack, "/api/0/alerts?kind=host")[1]["alerts"]] == [
        "a1", "b7", "m2", "web", "x3"]


def test_a_host_back_up_is_no_problem(stack: Stack) -> None:
    """A host that comes back UP leaves the problems, and its alerts are current again."""
    _down(stack, "web")
    stack.heartbeat("web")
    body = get(stack, "/api/0/alerts?kind=host")[1]
    assert (body["alerts"], body["summary"]["stale"]) == ([], 0)


def test_bad_kind_filter(stack: Stack) -> None:
    """An unknown kind is a 400 naming the accepted ones."""
    assert get(stack, "/api/0/alerts?kind=disk") == (400, {
        "error": "bad_request", "detail": "kind must be one or more of host, metric"})


def test_hosts_carry_their_alert_levels(stack: Stack) -> None:
    """Each host object counts its active alerts by level and names the worst."""
    hosts = {h["name"]: h for h in get(stack, "/api/0/hosts")[1]["hosts"]}
    assert {name: (h["alerts"], h["alert_level"]) for name, h in hosts.items()} == {
        "web": ({"CRITICAL": 1, "WARNING": 1, "UNKNOWN": 0}, "CRITICAL"),
        "db": ({"CRITICAL": 0, "WARNING": 1, "UNKNOWN": 0}, "WARNING"),
        "idle": ({"CRITICAL": 0, "WARNING": 0, "UNKNOWN": 0}, None)}


def test_quiet_hosts_cost_no_host_objects(stack: Stack, monkeypatch: Any) -> None:
    """The problems are made from the host objects of problem hosts and of hosts with
    alerts only: with 200 more hosts UP and quiet, no object is built for them (at
    10,000 hosts building them all held the reactor 0.3-0.9 s on every navigation
    count), and the answer is what it was."""
    _down(stack, "web", "db")
    before = get(stack, "/api/0/alerts")
    for n in range(200):
        stack.heartbeat(f"quiet{n:03d}")
    built: list[str] = []
    real = stack.api.views.json
    monkeypatch.setattr(stack.api.views, "json", lambda host: (built.append(host.name),
                                                               real(host))[1])
    assert get(stack, "/api/0/alerts") == before
    assert sorted(built) == ["db", "web"]
    # Nor does it walk them: the registry's names per state say which hosts are problems.
    monkeypatch.setattr(type(stack.registry), "__iter__", lambda self: iter(()))
    assert get(stack, "/api/0/alerts") == before
