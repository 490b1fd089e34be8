"""A fleet listed in the config: start-up, memory and a router's fall behind it.

    .venv/bin/python bench/inventory.py [--hosts 1000] [--users 0] [--interval 30]

Writes a config whose ``hosts:`` section lists every host, as a fleet's inventory
does (``host000000``...: an interval, two tags and a parent switch each; a switch
for every 100 hosts, each behind one core router), and starts the real ``twistd -n
heartbeat`` on it (journal and SQLite store on, ``grace`` 5 s, ``monitor_interval``
1 s). It prints the config's size, the seconds until the API answered and the RSS;
then, once every host, switch and the router have sent one heartbeat, the RSS with
the fleet UP. Then nothing more is sent, the case of the core router failing: the
router goes DOWN, and every switch and host behind it UNREACHABLE, not DOWN (the
dependencies, docs/OPERATIONS.md). It prints how long from the first to the last
host marked, the slowest and the median ``/api/0/status`` meanwhile, and the seconds
a restart takes with every host UNREACHABLE. With ``--users U``, U users own the
hosts in turn (``owner:`` in each host's entry; one admin besides): before the fall it
times what every page asks as one of them (``/api/0/me``, a page of the host list,
the problem counts), the median and the slowest of 20 each. Everything is on loopback, bounded in
count and time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import bring_in  # noqa: E402
from bench.outage import rss_mib  # noqa: E402
from tests.support import ServerProcess  # noqa: E402

from heartbeat.passwords import hash_password  # noqa: E402

ROUTER = "core-1"
PER_SWITCH = 100


def inventory(hosts: int, interval: float, users: int = 0) -> dict[str, dict[str, Any]]:
    """The ``hosts:`` section: ``hosts`` hosts behind a switch each, switches behind
    the router; with ``users``, each host owned by one of them in turn."""
    switches = max(1, -(-hosts // PER_SWITCH))
    section: dict[str, dict[str, Any]] = {ROUTER: {"tags": ["router"], "interval": interval}}
    for s in range(switches):
        section[f"sw-{s:04d}"] = {"tags": ["switch"], "interval": interval,
                                  "parents": [ROUTER]}
    for n in range(hosts):
        section[f"host{n:06d}"] = {"interval": interval, "tags": ["web", f"rack{n % 40}"],
                                   "parents": [f"sw-{n // PER_SWITCH:04d}"]}
        if users:
            section[f"host{n:06d}"]["owner"] = user_name(n % users)
    return section


def user_name(n: int) -> str:
    return f"user{n:05d}"


def user_figures(server: InventoryServer, users: int) -> dict[str, Any]:
    """What every page asks, as a user who owns every ``users``-th host: the median
    and the slowest of 20 requests each (ms)."""
    status, body = server.request("POST", "/api/0/auth/login",
                                  {"username": user_name(1), "password": PASSWORD})
    if status != 200:
        raise RuntimeError(f"login: {status} {body}")
    headers = {"Authorization": f"Bearer {body['token']}"}
    figures: dict[str, Any] = {}
    for path in ("/api/0/me", "/api/0/hosts?limit=100", "/api/0/alerts?limit=0"):
        times = []
        for _ in range(20):
            asked = time.monotonic()
            code, answer = server.request("GET", path, headers=headers)
            times.append(time.monotonic() - asked)
            if code != 200:
                raise RuntimeError(f"GET {path}: {code} {answer}")
        figures[path] = {"median_ms": round(statistics.median(times) * 1000, 1),
                         "worst_ms": round(max(times) * 1000, 1)}
    figures["/api/0/hosts?limit=100"]["total"] = answer_total(server, headers)
    return figures


def answer_total(server: InventoryServer, headers: dict[str, str]) -> int:
    """The hosts the user sees, as the host list counts them."""
    return int(server.request("GET", "/api/0/hosts?limit=1", headers=headers)[1]["total"])


PASSWORD = "inventory-bench-password"


class InventoryServer(ServerProcess):
    """The server with its config written as JSON (YAML's subset): the test support's
    YAML writer takes minutes over 100,000 hosts."""

    token: str | None = None
    """The admin's bearer token, sent with every request once logged in (:meth:`log_in`)."""

    def write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config))

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        if self.token is not None and headers is None:
            headers = {"Authorization": f"Bearer {self.token}"}
        return super().request(method, path, body, headers)

    def log_in(self) -> None:
        """As the admin, when the config has users."""
        if "users" in self.config:
            status, body = self.request("POST", "/api/0/auth/login",
                                        {"username": "admin", "password": PASSWORD})
            if status != 200:
                raise RuntimeError(f"login: {status} {body}")
            self.token = body["token"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--users", type=int, default=0,
                        help="users owning the hosts in turn (0: no users, no login)")
    parser.add_argument("--interval", type=float, default=30.0,
                        help="the interval of every host (s): longer than bringing the fleet in, "
                             "so no host is seen silent while its switch is heard")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.hosts < 1:
        parser.error("--hosts must be at least 1")
    section = inventory(args.hosts, args.interval, args.users)
    names = list(section)
    beats = [json.dumps({"ID": "HTB", "name": name, "seq": 1,
                         "interval": args.interval}).encode() for name in names]
    with tempfile.TemporaryDirectory() as tmp:
        config = {"ws_port": None, "source_rate": 1e9, "max_hosts": 10**7,
                  "max_unconfigured_hosts": 10**7, "grace": 5.0, "monitor_interval": 1.0,
                  "hosts": section}
        if args.users:
            secret = hash_password(PASSWORD)
            config["users"] = {"admin": {"admin": True, "password": secret},
                               **{user_name(n): {"password": secret}
                                  for n in range(args.users)}}
        began = time.monotonic()
        server = InventoryServer(Path(tmp), **config)
        server.start()
        server.log_in()
        figures: dict[str, Any] = {
            "hosts": args.hosts, "listed": len(names),
            "config_mb": round(server.config_path.stat().st_size / 1e6, 2),
            "start_s": round(time.monotonic() - began, 2),
            "start_rss_mib": round(rss_mib(server.process.pid), 1)}
        try:
            bring_in(server, beats, lambda s: s["hosts"]["UP"] == len(names))
            figures["up_rss_mib"] = round(rss_mib(server.process.pid), 1)
            if args.users:
                figures["as_a_user"] = user_figures(server, args.users)
            print(f"{len(names):,} hosts UP; the router falls silent, and all behind it",
                  flush=True)
            during: list[float] = []
            first = last = None
            stop = time.monotonic() + args.timeout
            status: dict[str, Any] = {}
            while time.monotonic() < stop:
                asked = time.monotonic()
                status = server.get("/api/0/status")
                took = time.monotonic() - asked
                silent = status["hosts"]["DOWN"] + status["hosts"]["UNREACHABLE"]
                if silent and first is None:
                    first = asked
                if first is not None:
                    during.append(took)
                if silent == len(names):
                    last = time.monotonic()
                    break
                time.sleep(0.05)
            if first is None or last is None:
                print(f"not every host fell silent within {args.timeout:.0f} s: "
                      f"{status.get('hosts')}")
                return 1
            figures.update({
                "down": status["hosts"]["DOWN"], "unreachable": status["hosts"]["UNREACHABLE"],
                "first_to_last_s": round(last - first, 2),
                "status_worst_during_ms": round(max(during) * 1000, 1),
                "status_median_during_ms": round(statistics.median(during) * 1000, 1)})
            server.stop()
            began = time.monotonic()
            server = InventoryServer(Path(tmp), **config, hb_port=server.udp_port,
                                     hbd_port=server.http_port)
            server.start()
            server.log_in()
            figures["restart_s"] = round(time.monotonic() - began, 2)
            figures["restart_rss_mib"] = round(rss_mib(server.process.pid), 1)
            figures["restored"] = server.get("/api/0/status")["hosts"]
            print(json.dumps(figures, indent=1))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
