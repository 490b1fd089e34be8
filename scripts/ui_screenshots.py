#!/usr/bin/env python3
"""Start a real server with demo hosts and save a screenshot of each page in docs/img/.

    .venv/bin/python scripts/ui_screenshots.py [--out docs/img] [--serve]

Pages at 1366 px (desktop) and 390 px (phone), light and dark: live.png,
host.png, alerts.png, jobs.png, operations.png, settings.png, login.png, and live-dark.png,
host-dark.png; phone.png, phone-live.png and phone-dark.png.

Needs Debian's chromium (/usr/bin/chromium) and playwright (the test extra).
``--serve`` keeps the demo server running after the screenshots (Ctrl-C stops it)
so the pages can be tried in a browser; the URL and logins are printed.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import ServerProcess, wait_until  # noqa: E402

from heartbeat.passwords import hash_password  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "demo-password"


def demo_config() -> dict[str, Any]:
    password = hash_password(PASSWORD)
    return {
        "grace": 1.0,
        "users": {
            "alice": {"admin": True, "password": password, "full_name": "Alice Example",
                      "email": "alice@example.com"},
            "bob": {"password": password, "full_name": "Bob Operator"},
        },
        "hosts": {"db1": {"managers": ["bob"], "threshold_config": "database",
                          "description": "PostgreSQL primary, rack 3", "tags": ["db", "rack3"]},
                  "web1": {"monitors": ["bob"], "description": "front web server",
                           "tags": ["web", "rack3"]},
                  "mail1": {"tags": ["mail"]}},
        "email": {"smtp_host": "smtp.example.com", "username": "heartbeat",
                  "password": "not-shown-anywhere", "to": ["ops@example.com"]},
        "thresholds": {"cpu_monitor": {"cpu_percent": {"warning": 80, "critical": 90}},
                       "memory_monitor": {"percent": {"warning": 85, "critical": 95,
                                                      "generic": False}},
                       "disk_monitor": {"partitions": {"*": {"percent": {"warning": 80,
                                                                         "critical": 90}}}}},
        "threshold_configs": {"database": {"thresholds": {
            "cpu_monitor": {"cpu_percent": {"warning": 60, "critical": 75}}}}},
        "jobs": {"pg-backup": {"schedule": "30 2 * * *", "timezone": "Europe/Berlin",
                               "grace": "1h", "max_runtime": "2h", "host": "db1",
                               "description": "nightly pg_dumpall to the NAS"},
                 "certbot-renew": {"period": "12h", "grace": "1h", "host": "web1"},
                 "mail-queue-report": {"period": 2, "grace": 1, "host": "mail1"},
                 "logrotate": {"schedule": "@daily", "timezone": "UTC", "grace": "2h",
                               "host": "web1"}},
    }


def jobs(server: ServerProcess) -> None:
    """Runs of the demo cron jobs as JOB datagrams from their hosts: successes with
    durations, one failure with its output; mail-queue-report is left to fall late."""
    def ping(host: str, job: str, ping: str, **fields: Any) -> None:
        server.send({"ID": "JOB", "name": host, "job": job, "ping": ping, **fields})

    for _ in range(3):
        ping("db1", "pg-backup", "start")
        time.sleep(0.4)
        ping("db1", "pg-backup", "exit", rc=0, log="dumped 14 databases (41 GiB)\n")
    ping("web1", "certbot-renew", "start")
    time.sleep(0.3)
    ping("web1", "certbot-renew", "exit", rc=1,
         log="Renewing www.example.com\nChallenge failed: connection refused (port 80)\n")
    ping("web1", "logrotate", "success")
    ping("db1", "pg-backup", "start")


def operations(server: ServerProcess, bearer: dict[str, str]) -> None:
    """Maintenance windows (one open now, one recurring, one of a glob tomorrow) and a
    silence, made through the API as an admin."""
    now = time.time()
    for body in ({"hosts": ["web1"], "start": now - 600, "duration": "2h",
                  "comment": "kernel 6.1.0-21 and reboot"},
                 {"hosts": ["db1"], "cron": "30 3 * * 0", "duration": "1h",
                  "timezone": "Europe/Berlin", "comment": "weekly VACUUM FULL"},
                 {"hosts": ["node01*"], "start": now + 86400, "duration": "4h",
                  "comment": "rack 3 power work"}):
        status, made = server.request("POST", "/api/0/maintenance", body, headers=bearer)
        assert status == 201, made
    status, made = server.request("POST", "/api/0/silences", {
        "host": "mail1", "metric": "nagios_runner.*", "duration": "8h",
        "comment": "check_http slow, ticket 4211"}, headers=bearer)
    assert status == 201, made


def cpu(i: int, base: float) -> dict[str, Any]:
    value = base + 25 * math.sin(i / 5) + (i % 3)
    return {"cpu_percent": round(value, 1), "per_core": [round(value - 4, 1), round(value + 4, 1)],
            "cpu_count": 2, "load_1min": round(value / 40, 2), "load_5min": round(value / 50, 2),
            "load_15min": round(value / 60, 2), "frequency_mhz": 2400.0, "process_count": 183,
            "process_running": 1, "process_sleeping": 170, "process_zombie": 0,
            "thread_count": 412, "uptime_seconds": 86400.0 + i, "boot_time": 1711234567.0}


def memory(i: int, percent: float) -> dict[str, Any]:
    return {"total_mb": 24034.5, "available_mb": 24034.5 * (1 - percent / 100),
            "used_mb": 24034.5 * percent / 100, "free_mb": 3000.0, "percent": percent + i % 4,
            "buffers_mb": 120.0, "cached_mb": 4100.0, "swap_total_mb": 2048.0,
            "swap_used_mb": 100.0, "swap_free_mb": 1948.0, "swap_percent": 4.9}


def disk(i: int) -> dict[str, Any]:
    return {"partitions": {
        "/": {"device": "/dev/sda1", "fstype": "ext4", "total_gb": 48.9, "used_gb": 20.1,
              "free_gb": 26.3, "free_mb": 26931.2, "percent": 43.3, "inodes_percent": 12.0},
        "/var": {"device": "/dev/sda3", "fstype": "ext4", "total_gb": 200.0,
                 "used_gb": 166.0 + i / 10, "free_gb": 34.0 - i / 10, "free_mb": 34816.0,
                 "percent": round(83.0 + i / 20, 1), "inodes_percent": 30.5}},
        "io": {"read_bytes": 123456789 + i * 400000, "write_bytes": 987654321 + i * 900000,
               "read_count": 1234, "write_count": 5678, "read_time_ms": 4000,
               "write_time_ms": 9000}}


def network(i: int) -> dict[str, Any]:
    sent, recv = 10**9 + i * 250_000 * (2 + math.sin(i / 4)), 4 * 10**9 + i * 900_000
    return {"interfaces": {"eth0": {"bytes_sent": sent, "bytes_recv": recv, "packets_sent": 10,
                                    "packets_recv": 20, "errin": 0, "errout": 0, "dropin": 0,
                                    "dropout": 0, "is_up": True, "speed_mbps": 1000,
                                    "mtu": 1500}},
            "bytes_sent": sent, "bytes_recv": recv, "errors_total": 0, "dropped": 0,
            "connections": {"total": 12, "established": 5, "listen": 4, "time_wait": 2,
                            "close_wait": 0, "other": 1}}


ZFS = {"pools": {
    "tank": {"health": "DEGRADED", "health_ok": 0, "size": 9981503995904, "alloc": 3046184919040,
             "free": 6935319076864, "capacity": 30, "fragmentation": 9, "dedup_ratio": 1.0,
             "read_ops": 64, "write_ops": 12, "read_bytes": 281656, "write_bytes": 308598,
             "read_errors": 0, "write_errors": 0, "checksum_errors": 3, "data_errors": 0,
             "vdevs_unhealthy": 1,
             "scan": "resilvered 1.20T in 03:12:45 with 0 errors on Sun Jun 11 2023",
             "status": "One or more devices are faulted in response to persistent errors.",
             "vdevs": [{"name": "mirror-0", "state": "DEGRADED", "depth": 1, "read": 0,
                        "write": 0, "cksum": 3, "note": None},
                       {"name": "sda", "state": "ONLINE", "depth": 2, "read": 0, "write": 0,
                        "cksum": 0, "note": None},
                       {"name": "sdb", "state": "FAULTED", "depth": 2, "read": 0, "write": 0,
                        "cksum": 3, "note": "too many errors"}]},
    "backup": {"health": "ONLINE", "health_ok": 1, "size": 3998614552576,
               "alloc": 3400000000000, "free": 598614552576, "capacity": 85,
               "fragmentation": 31, "dedup_ratio": 1.12, "read_ops": 3, "write_ops": 40,
               "read_bytes": 20480, "write_bytes": 4096000, "read_errors": 0,
               "write_errors": 0, "checksum_errors": 0, "data_errors": 0,
               "vdevs_unhealthy": 0, "scan": None, "status": None, "vdevs": []}},
    "pool_count": 2, "pools_unhealthy": 1}

NAGIOS = {"check_load_status_code": 0, "check_load_status": "OK",
          "check_load_output": "OK - load average: 0.30, 0.20, 0.10", "check_load_load1": 0.3,
          "check_load_load5": 0.2, "check_load_load15": 0.1,
          "check_http_status_code": 1, "check_http_status": "WARNING",
          "check_http_output": "HTTP WARNING: HTTP/1.1 200 OK - 1.9 second response time",
          "check_http_time": 1.9}


def feed(server: ServerProcess, samples: int = 40) -> None:
    """Heartbeats, plugin history and a few messages from four demo hosts."""
    server.send({"ID": "HTB", "name": "backup1", "interval": 1})
    server.send({"ID": "BOOT", "name": "web1", "boot_time": time.time() - 86400})
    for i in range(samples):
        for name, rtt in (("web1", 0.42), ("db1", 1.3), ("mail1", 0.8)):
            server.send({"ID": "HTB", "name": name, "interval": 300, "rtt": rtt + (i % 5) / 10})
        server.send({"ID": "PLG", "name": "web1", "plugins": {
            "cpu_monitor": cpu(i, 45), "memory_monitor": memory(i, 62), "disk_monitor": disk(i),
            "network_monitor": network(i)}})
        server.send({"ID": "PLG", "name": "db1", "plugins": {
            "cpu_monitor": cpu(i, 40), "memory_monitor": memory(i, 90), "disk_monitor": disk(0),
            "zfs_monitor": ZFS}})
        server.send({"ID": "PLG", "name": "mail1", "plugins": {"nagios_runner": NAGIOS,
                                                               "cpu_monitor": cpu(i, 15)}})
        time.sleep(0.5)
    server.send({"ID": "PLG", "name": "web1", "plugins": {"os_info": {
        "system": "Linux", "hostname": "web1", "kernel": "6.1.0-18-amd64",
        "architecture": "x86_64", "distribution": "Debian GNU/Linux 12 (bookworm)",
        "cpu_model": "Intel(R) Xeon(R) E-2236", "cpu_count": 2, "memory_total_mb": 24034.5,
        "boot_time": 1711234567.0, "python_version": "3.11.2", "agent_version": "0.1.0"}}})
    server.send({"ID": "MSG", "name": "db1", "text": "nightly backup finished in 41 min",
                 "level": "info"})
    server.send({"ID": "MSG", "name": "web1", "text": "certificate expires in 12 days",
                 "level": "warning"})


def fleet(server: ServerProcess, hosts: int = 60) -> None:
    """More hosts, so /live looks like a fleet: a few DOWN, one with a message."""
    for n in range(hosts):
        server.send({"ID": "HTB", "name": f"node{n:03d}", "interval": 3600 if n % 17 else 1,
                     "rtt": 0.3 + (n % 7) / 10})
    server.send({"ID": "SHUT", "name": "node005"})
    server.send({"ID": "MSG", "name": "node012", "text": "kernel upgraded, reboot pending",
                 "level": "warning"})


def zoom_in(page: Any) -> None:
    """Drag across the CPU chart's last 1 % (36 s of the hour): the demo's history is
    20 s long; the other charts follow the zoom."""
    over = page.locator("figure[data-chart=cpu] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.99, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 1, y, steps=4)
    page.mouse.up()
    page.mouse.move(0, 0)


def shoot(browser: Any, base: str, out: Path, scheme: str) -> None:
    """Every page at 1366 px and the phone views at 390 px in one colour scheme."""
    dark = "-dark" if scheme == "dark" else ""
    context = browser.new_context(viewport={"width": 1366, "height": 860},
                                  color_scheme=scheme)
    page = context.new_page()
    page.goto(f"{base}/login?next=%2Flive")
    if not dark:
        page.screenshot(path=str(out / "login.png"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#hosts tbody tr[data-host]")
    page.wait_for_timeout(800)
    page.screenshot(path=str(out / f"live{dark}.png"))
    page.goto(f"{base}/plugins/db1")
    page.wait_for_selector(".plot canvas")
    page.select_option("#range", "3600")
    page.wait_for_timeout(600)
    zoom_in(page)
    page.wait_for_timeout(400)
    page.screenshot(path=str(out / f"host{dark}.png"), full_page=True)
    if not dark:
        page.goto(f"{base}/alerts")
        page.wait_for_selector("#alert-summary > *")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "alerts.png"), full_page=True)
        page.goto(f"{base}/jobs")
        page.wait_for_selector("#jobs tbody tr[data-level=CRITICAL]")
        page.click("tr[data-job=certbot-renew] button.name")
        page.wait_for_selector("#runs tbody tr")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "jobs.png"), full_page=True)
        page.goto(f"{base}/operations")
        page.wait_for_selector("#windows tbody tr[data-active=yes]")
        page.wait_for_selector("#silences tbody tr")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "operations.png"), full_page=True)
        page.goto(f"{base}/settings")
        page.wait_for_selector("#config tbody tr")
        page.check("#config-changed")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "settings.png"), full_page=True)
    phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme=scheme,
                                device_scale_factor=1)
    phone.add_cookies(context.cookies())
    small = phone.new_page()
    small.goto(f"{base}/plugins/web1")
    small.wait_for_selector(".plot canvas")
    small.wait_for_timeout(500)
    small.screenshot(path=str(out / f"phone{dark}.png"))
    if not dark:
        small.goto(f"{base}/live")
        small.wait_for_selector("#hosts tbody tr[data-host]")
        small.wait_for_timeout(500)
        small.screenshot(path=str(out / "phone-live.png"))
    phone.close()
    context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), **demo_config()).start()
        try:
            fleet(server)
            feed(server)
            jobs(server)
            _, login = server.request("POST", "/api/0/auth/login",
                                      {"username": "alice", "password": PASSWORD})
            bearer = {"Authorization": f"Bearer {login['token']}"}
            operations(server, bearer)
            wait_until(lambda: server.request("GET", "/api/0/hosts/backup1",
                                              headers=bearer)[1].get("state") == "DOWN", 10)
            base = f"http://127.0.0.1:{server.http_port}"
            args.out.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM)
                shoot(browser, base, args.out, "light")
                shoot(browser, base, args.out, "dark")
                browser.close()
            for name in sorted(args.out.glob("*.png")):
                print(f"{name} {name.stat().st_size // 1024} KiB")
            if args.serve:
                print(f"serving on {base} (alice / bob, password {PASSWORD}); Ctrl-C stops")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
