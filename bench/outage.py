"""A fleet that goes silent at once: how long until every host is DOWN, and how the
server answers meanwhile.

    .venv/bin/python bench/outage.py [--hosts 1000] [--interval 5] [--step 0.05]

Starts the real ``twistd -n heartbeat`` (journal and SQLite store on, ``grace`` 5 s,
``monitor_interval`` 1 s), brings ``--hosts`` hosts UP with one heartbeat each
(announcing ``--interval``), then sends nothing more: the case of the server's own
uplink or a whole data centre going away. Every ``--step`` seconds it asks
``/api/0/status`` and prints, once every host is DOWN and the server is quiet
again: the seconds from the first host's deadline to the last host DOWN, the
slowest status answer meanwhile (the reactor held by the fall, the store's flushes
and the collector) and the median after, the server's RSS, and the collector's
longest pause. Then every host heartbeats again (the uplink is back), as fast as
the sender goes, and it prints how long until every host is UP and the slowest
status answer meanwhile (``--restart``: first the server restarts, with every
host DOWN and its flap history in the store, and it prints how long until the API
answered and the RSS). The hosts' deadlines spread over the time it took to send the last
round of heartbeats (some 2 s for 100,000): what says how fast the server marks
them is the time from the last host's deadline to the last host DOWN (the monitor
ticks every second: up to a second of it is the tick). Everything is on loopback,
bounded in count and time.
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

from bench.fleet import bring_in, heartbeats, send  # noqa: E402
from tests.support import ServerProcess  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0,
                        help="the interval the heartbeats announce (s)")
    parser.add_argument("--step", type=float, default=0.05,
                        help="seconds between two status requests")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--restart", action="store_true",
                        help="restart the server once every host is DOWN, before they "
                             "come back: how long until the API answers, and its RSS")
    args = parser.parse_args()
    if args.hosts < 1:
        parser.error("--hosts must be at least 1")
    grace = 5.0
    with tempfile.TemporaryDirectory() as tmp:
        config = {"ws_port": None, "source_rate": 1e9, "max_hosts": 10**7,
                  "max_unconfigured_hosts": 10**7, "grace": grace, "monitor_interval": 1.0}
        server = ServerProcess(Path(tmp), **config).start()
        restarted: dict[str, float] = {}
        try:
            fleet = heartbeats(args.hosts, args.interval)
            last_sent = bring_in(server, fleet, lambda s: s["hosts"]["UP"] == args.hosts)
            deadline = last_sent + args.interval + grace  # the last host's
            print(f"{args.hosts:,} hosts UP; silent from now", flush=True)
            during: list[float] = []
            after: list[float] = []
            first_down = all_down = None
            stop = time.monotonic() + args.timeout
            while time.monotonic() < stop:
                start = time.monotonic()
                status = server.get("/api/0/status")
                took = time.monotonic() - start
                down = status["hosts"]["DOWN"]
                if down and first_down is None:
                    first_down = start
                if first_down is not None and all_down is None:
                    during.append(took)
                if down == args.hosts and all_down is None:
                    all_down = time.monotonic()
                elif all_down is not None:
                    after.append(took)
                    if time.monotonic() - all_down > 5:
                        break
                time.sleep(args.step)
            if all_down is None or first_down is None:
                print(f"not every host went DOWN within {args.timeout:.0f} s: "
                      f"{status['hosts']}")
                return 1
            if args.restart:  # the server restarted with every host DOWN
                server.stop()
                began = time.monotonic()
                server = ServerProcess(Path(tmp), **config, hb_port=server.udp_port,
                                       hbd_port=server.http_port).start()
                restarted = {"restart_s": round(time.monotonic() - began, 2),
                             "restored_rss_mib": round(rss_mib(server.process.pid), 1)}
                status = server.get("/api/0/status")
            # The uplink is back: every host's next heartbeat comes, as fast as the
            # sender goes (about 50,000 a second), and again for those the kernel dropped.
            start = time.monotonic()
            slowest = 0.0
            rounds = 0

            def timed_status() -> dict[str, Any]:
                nonlocal slowest
                asked = time.monotonic()
                answer = server.get("/api/0/status")
                slowest = max(slowest, time.monotonic() - asked)
                return answer

            while status["hosts"]["UP"] < args.hosts and time.monotonic() - start < args.timeout:
                rounds += 1
                send(server, fleet, aside=timed_status)
                for _ in range(50):  # until the server has taken what it got
                    status = timed_status()
                    if status["hosts"]["UP"] == args.hosts:
                        break
                    time.sleep(0.1)
            all_up = time.monotonic() - start
            collector = status.get("collector", {})
            print(json.dumps({
                "hosts": args.hosts,
                "back_up_s": round(all_up, 2) if status["hosts"]["UP"] == args.hosts else None,
                "back_up_rounds": rounds,
                "kernel_drops": status["ingest"]["kernel_drops"],
                "status_worst_back_up_ms": round(slowest * 1000, 1),
                "all_down_after_last_deadline_s": round(all_down - deadline, 2),
                "first_to_last_down_s": round(all_down - first_down, 2),
                "status_worst_during_ms": round(max(during) * 1000, 1),
                "status_median_during_ms": round(statistics.median(during) * 1000, 1),
                "status_median_after_ms": round(statistics.median(after) * 1000, 1),
                "rss_mib": round(rss_mib(server.process.pid), 1),
                "collector_longest_ms": round(collector.get("longest", 0) * 1000, 1),
                "journal_lines": status["journal"]["lines"],
                "store_failures": status["store"]["failures"],
                **restarted,
            }, indent=1))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
