"""/metrics of the real twistd, checked by promtool and scraped by a real Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ServerProcess, free_port, stop_process, wait_until

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(None in (PROMTOOL, PROMETHEUS),
                       reason="promtool/prometheus missing (.ci/apt-install installs them)"),
]


METRICS = {"metrics": {"enabled": True, "allow": ["127.0.0.1"]},
           "jobs": {"backup": {"period": "1h", "host": "web1",
                               "uuid": "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"}},
           "thresholds": {"cpu_monitor": {"cpu_percent": {"warning": 80, "critical": 90}},
                          "disk_monitor": {"partitions": {"*": {"percent": {"warning": 80}}}}}}


def _fleet(server: ServerProcess, headers: dict[str, str] | None = None) -> None:
    server.send({"ID": "HTB", "name": "web1", "rtt": 1.25})
    server.send({"ID": "PLG", "name": "web1", "plugins": {
        "cpu_monitor": {"cpu_percent": 97.0},
        "disk_monitor": {"partitions": {"/": {"percent": 42.0}}}}})
    server.send({"ID": "HTB", "name": "db1"})
    server.send(b"not json")
    server.send({"ID": "JOB", "name": "web1", "job": "backup", "ping": "exit", "rc": 0})

    def arrived() -> bool:
        status, host = server.request("GET", "/api/0/hosts/web1", headers=headers)
        return status == 200 and "cpu_monitor" in host["plugins"]

    wait_until(arrived)


def _scrape(server: ServerProcess, accept: str | None = None) -> tuple[str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/metrics",
                                     headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read()


def test_promtool_accepts_the_real_exposition(server_factory: Any) -> None:
    """promtool check metrics finds nothing wrong with what the real server serves."""
    server = server_factory(**METRICS)
    _fleet(server)
    content_type, body = _scrape(server)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b'heartbeat_plugin_metric{host="web1",path="cpu_percent",plugin="cpu_monitor"} 97.0' \
        in body
    assert b'heartbeat_datagrams_dropped_total{reason="bad_format"} 1.0' in body
    assert b'heartbeat_job_level{host="web1",job="backup"} 0.0' in body
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                            timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def _admin_key(server: ServerProcess) -> str:
    """A read-only API key of the admin, made through the API as a user would."""
    status, login = server.request("POST", "/api/0/auth/login",
                                   {"username": "alice", "password": "alice-password"})
    assert status == 200, login
    status, made = server.request("POST", "/api/0/users/alice/keys",
                                  {"name": "prometheus", "scope": "ro"},
                                  {"Authorization": f"Bearer {login['token']}"})
    assert status == 201, made
    token: str = made["token"]
    return token


def test_real_prometheus_scrapes_it_healthy(server_factory: Any, tmp_path: Path) -> None:
    """A Prometheus on loopback, with an admin's read-only API key, scrapes /metrics
    (OpenMetrics) healthy and stores the series; without the key it is refused."""
    from heartbeat.passwords import hash_password

    server = server_factory(**{**METRICS, "metrics": {"enabled": True}, "users": {
        "alice": {"admin": True, "password": hash_password("alice-password")}}})
    key = _admin_key(server)
    _fleet(server, {"Authorization": f"Bearer {key}"})
    assert server.request("GET", "/metrics")[0] == 401
    port = free_port()
    key_file = tmp_path / "heartbeat.key"
    key_file.write_text(key)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "heartbeat",
                            "authorization": {"credentials_file": str(key_file)},
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{server.http_port}"]}]}]}))
    log = (tmp_path / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)

    def api(path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}",
                                        timeout=5) as response:
                return json.loads(response.read())["data"]
        except OSError:
            return None

    def healthy() -> Any:
        targets = (api("targets") or {}).get("activeTargets") or []
        return targets and targets[0]["health"] == "up" and targets[0]

    try:
        target = wait_until(healthy, timeout=60, step=0.25)
        assert (target["lastError"], target["scrapeUrl"]) == (
            "", f"http://127.0.0.1:{server.http_port}/metrics")
        result = wait_until(lambda: (api("query?query=heartbeat_host_up") or {}).get("result"),
                            timeout=30, step=0.25)
        assert {r["metric"]["host"]: r["value"][1] for r in result} == {"web1": "1", "db1": "1"}
        # Every query of the Grafana example dashboard runs, and those about the fleet
        # find it (rates need two scrapes: their count is not pinned).
        dashboard = json.loads((ROOT / "etc/grafana/heartbeat-dashboard.json").read_text())
        found = {}
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$host", ".*")
                data = api("query?" + urllib.parse.urlencode({"query": expr}))
                assert data is not None, expr
                found[panel["title"]] = len(data["result"])
        assert {title: n for title, n in found.items() if "(5 min)" not in title
                and "per minute" not in title} == {
            "Hosts by state": 4, "Active alerts": 3, "Host up": 2, "Round trip (ms)": 1,
            "CPU (%)": 1,
            "Alerts (1 WARNING, 2 CRITICAL, 3 UNKNOWN)": 1,
            "Cron jobs (0 OK, 1 WARNING, 2 CRITICAL)": 1,
            "Cron jobs: hours since the last success": 1}
    finally:
        stop_process(prometheus)
        log.close()
