"""GET /metrics: what it shows (from the objects /api/0/status reads), formats, access."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from heartbeat.server.metrics import MetricsExporter
from tests.apistack import Stack, user

ON = {"enabled": True}


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name -> {sorted labels: value} of a text exposition."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, metrics={**ON, "max_series": 1000}, thresholds={
        "cpu_monitor": {"cpu_percent": {"warning": 80, "critical": 90}},
        "disk_monitor": {"partitions": {"*": {"percent": {"warning": 80, "critical": 90}}}}})
    yield stack
    stack.close()


def _fleet(stack: Stack) -> None:
    stack.send({"ID": "HTB", "name": "web1", "rtt": 0.5})
    stack.send({"ID": "PLG", "name": "web1", "plugins": {
        "cpu_monitor": {"cpu_percent": 95.0, "load": 3.0},
        "disk_monitor": {"partitions": {"/": {"percent": 50, "free": 10}, "/var": {
            "percent": 85.5}}},
        "os_info": {"kernel": "6.1"}}})
    stack.heartbeat("db1")
    stack.send({"ID": "SHUT", "name": "db1"})
    stack.send({"ID": "bogus"})


def test_hosts_plugin_metrics_alerts_and_counters(stack: Stack) -> None:
    """Host state and RTT, only the plugin values a rule names, alert levels, and the
    server's counters as /api/0/status has them."""
    _fleet(stack)
    response = stack.call("GET", "/metrics")
    assert (response.status, response.header("content-type")) == (
        200, "text/plain; version=0.0.4; charset=utf-8")
    got = _samples(response.text)
    assert got["heartbeat_host_up"] == {(("host", "db1"),): 0.0, (("host", "web1"),): 1.0}
    assert got["heartbeat_host_state"] == {
        (("host", "db1"), ("state", "DOWN")): 1.0, (("host", "web1"), ("state", "UP")): 1.0}
    assert got["heartbeat_hosts"] == {(("state", "UNKNOWN"),): 0.0, (("state", "UP"),): 1.0,
                                      (("state", "DOWN"),): 1.0,
                                      (("state", "UNREACHABLE"),): 0.0}
    assert got["heartbeat_host_rtt_seconds"] == {(("host", "web1"),): 0.0005}
    assert got["heartbeat_plugin_metric"] == {
        (("host", "web1"), ("path", "cpu_percent"), ("plugin", "cpu_monitor")): 95.0,
        (("host", "web1"), ("path", "partitions./.percent"), ("plugin", "disk_monitor")): 50.0,
        (("host", "web1"), ("path", "partitions./var.percent"),
         ("plugin", "disk_monitor")): 85.5}
    assert got["heartbeat_alert_level"] == {
        (("host", "web1"), ("metric_path", "cpu_monitor.cpu_percent")): 2.0,
        (("host", "web1"), ("metric_path", "disk_monitor.partitions./var.percent")): 1.0}
    status = stack.call("GET", "/api/0/status").json
    assert got["heartbeat_datagrams_received_total"] == {(): status["ingest"]["received"]}
    assert got["heartbeat_datagrams_dropped_total"] == {
        (("reason", reason),): n for reason, n in status["ingest"]["dropped"].items()}
    assert got["heartbeat_alerts"] == {(("level", "CRITICAL"),): 1.0,
                                       (("level", "WARNING"),): 1.0,
                                       (("level", "UNKNOWN"),): 0.0}
    assert got["heartbeat_build_info"] == {(("version", "0.1.0"),): 1.0}
    # With SQLite the server is alone: always the leader, never behind (docs/HA.md).
    assert (got["heartbeat_leader"], got["heartbeat_store_behind_seconds"]) == (
        {(): 1.0}, {(): 0.0})

def test_a_scrape_decodes_only_the_plugins_a_rule_may_name(stack: Stack,
                                                          monkeypatch: Any) -> None:
    """The store's latest data of a plugin no rule names (os_info here) is not decoded
    for a scrape (at 100,000 hosts that was half of one); what rules name still is."""
    from heartbeat.server import store

    _fleet(stack)
    decoded: list[str] = []
    real = store.read_json
    monkeypatch.setattr(store, "read_json",
                        lambda text: (decoded.append(text.decode()), real(text))[1])
    got = _samples(stack.call("GET", "/metrics").text)
    assert {"cpu_monitor", "disk_monitor", "zfs_monitor"} <= stack.alerts.rules.plugins
    assert "os_info" not in stack.alerts.rules.plugins
    assert len(decoded) == 2 and not any("kernel" in text for text in decoded)
    assert {dict(labels)["plugin"] for labels in got["heartbeat_plugin_metric"]} == {
        "cpu_monitor", "disk_monitor"}


def test_operations_gauges(stack: Stack) -> None:
    """Open maintenance windows, active silences and acknowledgements, as /api/0/status
    counts them (docs/OPERATIONS.md)."""
    _fleet(stack)
    operations = stack.server.operations
    operations.add_window({"hosts": ["db1"], "start": stack.clock.seconds() - 1,
                           "duration": 60}, None)
    operations.add_window({"hosts": ["web1"], "cron": "0 3 * * *", "duration": 60,
                           "timezone": "UTC"}, None)  # 08:00 UTC now: closed
    operations.add_silence({"host": "web1", "duration": 60, "comment": "x"}, None)
    operations.acknowledge("web1", "cpu_monitor.cpu_percent", "CRITICAL", None, "on it")
    got = _samples(stack.call("GET", "/metrics").text)
    assert {name: got[name] for name in (
        "heartbeat_maintenance_windows_open", "heartbeat_silences_active",
        "heartbeat_acknowledgements", "heartbeat_held_problems")} == {
        "heartbeat_maintenance_windows_open": {(): 1.0}, "heartbeat_silences_active": {(): 1.0},
        "heartbeat_acknowledgements": {(): 1.0}, "heartbeat_held_problems": {(): 0.0}}


def test_openmetrics_when_the_scraper_asks(stack: Stack) -> None:
    """Prometheus' Accept header gets OpenMetrics 1.0, valid to its strict parser."""
    _fleet(stack)
    response = stack.call("GET", "/metrics", headers={"Accept": (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")})
    assert response.header("content-type").startswith(
        "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(response.text)}
    assert families["heartbeat_datagrams_received"].type == "counter"
    assert families["heartbeat_build"].type == "info"


def test_series_bound_counts_what_is_left_out(stack: Stack) -> None:
    """Past max_series plugin series, the rest are left out and counted."""
    assert stack.server.metrics is not None
    stack.server.metrics.exporter.max_series = 2
    _fleet(stack)
    got = _samples(stack.call("GET", "/metrics").text)
    assert len(got["heartbeat_plugin_metric"]) == 2
    assert got["heartbeat_plugin_metric_series_left_out"] == {(): 1.0}


USERS = {"alice": user("alice-password", admin=True), "bob": user("bob-password")}


@pytest.fixture
def users_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, users=USERS, metrics=ON)
    yield stack
    stack.close()


def test_access_admin_session_or_allowed_address_only(users_stack: Stack,
                                                      tmp_path: Path) -> None:
    """With users: no credentials 401, a non-admin session 403, an admin session 200;
    an address in metrics.allow needs none."""
    statuses = [users_stack.call("GET", "/metrics").status,
                users_stack.call("GET", "/metrics", token=users_stack.token("bob")).status,
                users_stack.call("GET", "/metrics", token=users_stack.token("alice")).status]
    assert statuses == [401, 403, 200]
    body = users_stack.call("GET", "/metrics", token=users_stack.token("bob")).json
    assert body == {"error": "forbidden", "detail": "metrics are for admins, API keys and "
                                                     "the addresses listed in metrics.allow"}
    for allow, status in ((["192.0.2.0/24"], 401), (["10.0.0.0/8", "127.0.0.1"], 200)):
        other = Stack(tmp_path / str(status), users=USERS, metrics={**ON, "allow": allow})
        try:
            assert other.call("GET", "/metrics").status == status
        finally:
            other.close()


def test_disabled_is_not_found(tmp_path: Path) -> None:
    """Without metrics.enabled there is no /metrics at all: the API's 404."""
    stack = Stack(tmp_path)
    try:
        response = stack.call("GET", "/metrics")
        assert (response.status, response.json["error"]) == (404, "not_found")
        assert "metrics" not in stack.call("GET", "/api/0/status").json
    finally:
        stack.close()


def test_scrapes_during_a_render_share_it(stack: Stack) -> None:
    """A second full scrape in the same format while one renders waits for that render;
    another format or a filtered scrape renders its own."""
    from twisted.internet.defer import Deferred

    from heartbeat.server.store import read_latest_all
    from tests.apistack import fired

    calls: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

    def later(fn: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        calls.append((d, fn, args))
        return d

    exporter = MetricsExporter(
        stack.registry, stack.alerts, {}, version="0.1.0", started=0.0, states=["UP"],
        named_metrics=stack.alerts.named_values, run_in_thread=later,
        plugin_data=lambda: stack.store.read(read_latest_all))
    stack.heartbeat("web1")
    first, second = exporter.render(None), exporter.render("text/plain")
    other = exporter.render("application/openmetrics-text; version=1.0.0")
    filtered = exporter.render(None, sees=lambda host: False)
    assert (len(calls), exporter.scrapes, exporter.shared) == (3, 4, 1)
    for d, fn, args in calls:
        d.callback(fn(*args))
    one, two, three, four = (fired(d) for d in (first, second, other, filtered))
    assert one == two and b'host="web1"' in one[0] and b'host="web1"' not in four[0]
    assert three[1].startswith("application/openmetrics-text")


def test_api_keys_scrape_an_admin_everything_others_their_hosts(users_stack: Stack) -> None:
    """An admin's read-only key sees everything; bob's key only bob's hosts and no server
    numbers."""
    from heartbeat.server.access import HostAccess

    stack = users_stack
    stack.heartbeat("web1")
    stack.heartbeat("db1")
    stack.auth.set_access("web1", HostAccess("alice", ("bob",), ()))
    keys = {}
    for name in ("alice", "bob"):
        keys[name] = stack.call("POST", f"/api/0/users/{name}/keys",
                                {"name": "prometheus", "scope": "ro"},
                                token=stack.token(name)).json["token"]
    admin = _samples(stack.call("GET", "/metrics", token=keys["alice"]).text)
    bob = _samples(stack.call("GET", "/metrics", token=keys["bob"]).text)
    assert sorted(admin["heartbeat_host_up"]) == [(("host", "db1"),), (("host", "web1"),)]
    assert sorted(bob["heartbeat_host_up"]) == [(("host", "web1"),)]
    assert "heartbeat_datagrams_received_total" in admin
    assert "heartbeat_datagrams_received_total" not in bob


def test_cron_jobs_their_levels_times_and_pings(tmp_path: Path) -> None:
    """Each job's level, last success, last duration and next expected time; the pings."""
    from heartbeat.config.server import JobConfig

    uuid = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"
    stack = Stack(tmp_path, metrics=ON, config={"jobs": {
        "backup": JobConfig(period="1h", grace="5m", uuid=uuid, host="db1"),
        "certs": JobConfig(period="1d")}})
    try:
        start = stack.clock.seconds()
        assert stack.call("GET", f"/ping/{uuid}/start").status == 200
        stack.clock.advance(12)
        assert stack.call("GET", f"/ping/{uuid}/0").status == 200
        stack.clock.advance(1)
        assert stack.call("GET", f"/ping/{uuid}/4").status == 200
        assert stack.call("GET", "/ping/not-a-uuid").status == 404
        got = _samples(stack.call("GET", "/metrics").text)
    finally:
        stack.close()
    backup, certs = (("host", "db1"), ("job", "backup")), (("host", ""), ("job", "certs"))
    assert got["heartbeat_job_level"] == {backup: 2.0, certs: 0.0}
    assert got["heartbeat_job_last_success_timestamp_seconds"] == {backup: start + 12}
    assert got["heartbeat_job_last_duration_seconds"] == {backup: 12.0}  # its last timed run
    assert got["heartbeat_job_next_expected_timestamp_seconds"] == {
        backup: start + 13 + 3600, certs: start + 86400}
    assert (got["heartbeat_job_pings_total"], got["heartbeat_job_unknown_pings_total"]) == (
        {(): 3.0}, {(): 1.0})


def test_scrapes_share_a_render_only_when_they_get_the_same_format() -> None:
    """format_asked (no prometheus_client at start-up) never puts two headers that get
    different formats together, and puts the plain ones together."""
    from prometheus_client.exposition import choose_encoder

    from heartbeat.server.metrics import format_asked

    headers = [None, "", "text/plain", "text/plain;version=0.0.4", "*/*",
               "text/plain; version=1.0.0; escaping=values", "text/plain;version=1.0.0",
               "application/openmetrics-text", "application/openmetrics-text; version=1.0.0",
               "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
               "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
               "application/json, text/html"]
    for a in headers:
        for b in headers:
            if format_asked(a) == format_asked(b):
                assert choose_encoder(a or "")[1] == choose_encoder(b or "")[1], (a, b)
    assert {format_asked(h) for h in (None, "", "text/plain", "*/*",
                                      "text/plain;version=0.0.4")} == {""}
