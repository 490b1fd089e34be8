"""Cron-job pings against the real ``twistd -n heartbeat``: HTTP pings a second, their
latency, and what the server keeps.

    .venv/bin/python bench/pings.py [--jobs 100] [--pings 2000]

Starts the real server with ``--jobs`` jobs (half on a cron schedule in a time zone,
half on a period; ``ping_rate`` lifted out of the way), then sends ``--pings`` HTTP
pings one after another on one kept-alive connection (start, then an exit code with
a 1 KiB log, across the jobs), and prints the pings a second, the latency (p50, p99,
max) and the runs the API then shows; then the same as ``JOB`` datagrams, and the time
until the last one is in the API.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import ServerProcess, wait_until  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--pings", type=int, default=2000)
    args = parser.parse_args()
    ids = {f"job{n:04d}": str(uuid.uuid4()) for n in range(args.jobs)}
    jobs = {name: ({"schedule": f"{n % 60} * * * *", "timezone": "Europe/Berlin"}
                   if n % 2 else {"period": "1h"}) | {"uuid": ids[name], "host": "db1"}
            for n, (name, _) in enumerate(ids.items())}
    log = b"x" * 1023 + b"\n"
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), jobs=jobs, ping_rate=1e6,
                               source_rate=1e6).start()
        try:
            names = list(ids)
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
            took = []
            start = time.perf_counter()
            for n in range(args.pings):
                name = names[(n // 2) % len(names)]
                path = f"/ping/{ids[name]}/" + ("start" if n % 2 == 0 else str(n % 3))
                t = time.perf_counter()
                conn.request("POST", path, body=log if n % 2 else b"",
                             headers={"Content-Type": "text/plain"})
                answer = conn.getresponse()
                answer.read()
                took.append(time.perf_counter() - t)
                assert answer.status == 200, answer.status
            elapsed = time.perf_counter() - start
            took.sort()
            print(f"HTTP: {args.pings} pings in {elapsed:.2f} s: {args.pings / elapsed:.0f}/s; "
                  f"latency p50 {statistics.median(took) * 1e3:.2f} ms, "
                  f"p99 {took[int(len(took) * 0.99)] * 1e3:.2f} ms, max {took[-1] * 1e3:.2f} ms")
            status = server.get("/api/0/status")["jobs"]
            runs = sum(len(server.get(f"/api/0/jobs/{name}?limit=200")["runs"])
                       for name in names)
            print(f"  status: {status['pings']} pings taken; {runs} runs in the store")
            start = time.perf_counter()
            for n in range(args.pings):
                name = names[(n // 2) % len(names)]
                message = {"ID": "JOB", "name": "db1", "job": name,
                           "ping": "start" if n % 2 == 0 else "exit", "rc": n % 3,
                           "log": log.decode() if n % 2 else ""}
                server.send(message)
            sent = time.perf_counter() - start
            wait_until(lambda: server.get("/api/0/status")["jobs"]["pings"]
                       >= 2 * args.pings, timeout=120)
            done = time.perf_counter() - start
            print(f"UDP: {args.pings} JOB datagrams sent in {sent:.2f} s, all taken after "
                  f"{done:.2f} s ({args.pings / done:.0f}/s); dropped: "
                  f"{server.get('/api/0/status')['ingest']['dropped']}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
