"""A fleet of N hosts against the real server: memory, disk, restart and API latencies.

    .venv/bin/python bench/scale.py [--hosts 100000] [--rate 4000] [--requests 300]
                                    [--state DIR] [--restarts 3]

Starts the real ``twistd -n heartbeat`` (journal and store on; ``source_rate``,
``max_hosts`` and ``max_unconfigured_hosts`` lifted so one sender may bring in
the whole fleet) pinned to CPU 0, this script on CPU 1, and:

1. sends every host one HTB and one ~1.5 KB zlib PLG (the payloads of
   bench/ingest.py, host names ``host00000``...), paced, in chunks that are
   sent again if the server took fewer than were sent, until it holds all N;
2. prints the server's RSS (idle before, with the fleet after), then the
   latencies of ``GET /api/0/hosts`` (whole list; pages of 100 from the start
   and after random names; filtered pages) and ``GET /api/0/status``, p50 and
   p99 over ``--requests`` calls on one keep-alive connection;
3. stops the server and prints the SQLite file's size and each table's and
   index's share of it (``dbstat``);
4. starts it again ``--restarts`` times on that state, and prints how long it
   took until the API answered and until it reported all N hosts, the CPU
   seconds the server had used when the API answered (what a loaded machine
   moves least), and the RSS of the restored server.

Before the first start the heartbeat package is compiled to bytecode, as an
installed release is (pip writes ``__pycache__`` at install); a source tree run
with ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile all of its modules
again at every start (0.4-0.5 s of CPU, docs/PERFORMANCE.md).

With ``--state DIR`` the state is kept in DIR, and a DIR that already holds a
fleet of N hosts is reused (step 1 is skipped): restart and API figures can be
taken again without sending the fleet again. The HTBs announce an interval of
one day so no host goes DOWN while the figures are taken. Everything runs on
loopback; a 100,000-host run takes a few minutes.
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import SENDER_CPU, SERVER_CPU, TWISTD, free_port, host_name, htb_payload, plg_payload

import heartbeat

STORE_FILE = "heartbeat.sqlite3"
DAY = 86400


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compile_package() -> None:
    """The heartbeat package's bytecode, as an install leaves it."""
    compileall.compile_dir(Path(heartbeat.__file__).parent, quiet=1)


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Server:
    """The real twistd on a state directory, with a keep-alive HTTP connection to it."""

    def __init__(self, directory: Path, hosts: int) -> None:
        self.directory = directory
        self.hosts = hosts
        self.udp = self.http = 0
        self.config = directory / "bench.yaml"
        self.process: subprocess.Popen[bytes] | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.started_cpu = 0.0

    def _configure(self) -> None:
        """The config, on the state's kept ports while both are free: they are in the
        kernel's ephemeral range, and an outgoing connection of another process may take
        one between two restarts (one did); then on new ones."""
        kept = self.directory / "ports.json"
        if kept.exists():
            self.udp, self.http = json.loads(kept.read_text())
        if not kept.exists() or not (_bindable(self.udp, socket.SOCK_DGRAM)
                                     and _bindable(self.http, socket.SOCK_STREAM)):
            self.udp, self.http = free_port(), free_port(socket.SOCK_STREAM)
            kept.write_text(json.dumps([self.udp, self.http]))
        hosts = self.hosts
        self.config.write_text(json.dumps({
            "hb_host": "127.0.0.1", "hb_port": self.udp, "hbd_host": "127.0.0.1",
            "hbd_port": self.http, "ws_port": None, "state_dir": str(self.directory / "state"),
            "journal_dir": str(self.directory / "journal"), "journal_max_size": 64 * 1024 * 1024,
            "journal_max_backups": 2, "source_rate": 1e9, "max_hosts": 10 * hosts + 1000,
            "max_unconfigured_hosts": 10 * hosts + 1000,
        }))

    def start(self) -> float:
        """Start it; return seconds from spawn until ``/api/0/status`` answered (the CPU
        seconds it had used by then in ``started_cpu``)."""
        self._configure()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logfile", str(self.directory / "twistd.log"),
             "heartbeat", "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.directory)
        os.sched_setaffinity(self.process.pid, {SERVER_CPU})
        while True:
            try:
                self.get("/api/0/status")
                took = time.monotonic() - started
                self.started_cpu = cpu_seconds(self.process.pid)
                return took
            except OSError:
                self.conn = None
                if self.process.poll() is not None or time.monotonic() - started > 300:
                    self.process.kill()
                    log = (self.directory / "twistd.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"server did not start:\n{log}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        assert self.process is not None
        self.process.terminate()
        self.process.wait(120)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def get(self, path: str) -> tuple[bytes, float]:
        """The body of a GET and the seconds it took (keep-alive; reconnects once)."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=60)
            try:
                start = time.perf_counter()
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                body = response.read()
                took = time.perf_counter() - start
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
            return body, took
        raise AssertionError("unreachable")

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/api/0/status")[0])


def send_paced(sock: socket.socket, port: int, data: list[bytes], rate: float) -> None:
    start = time.perf_counter()
    address = ("127.0.0.1", port)
    for n, datagram in enumerate(data):
        while (time.perf_counter() - start) * rate < n:
            pass
        sock.sendto(datagram, address)


def settled_accepted(server: Server) -> int:
    last, moved = -1, time.monotonic()
    while True:
        now = int(server.status()["ingest"]["accepted"])
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > 0.5:
            return now
        time.sleep(0.1)


def build(server: Server, hosts: int, rate: float, chunk: int = 5000) -> float:
    """Bring in every host (one HTB, one PLG); return the seconds it took."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # ACKs are not read
    started = time.monotonic()
    pace = rate
    for first in range(0, hosts, chunk):
        numbers = range(first, min(hosts, first + chunk))
        data = [htb_payload(n, hosts, DAY) for n in numbers]
        data += [zlib.compress(plg_payload(n, hosts)) for n in numbers]
        for _ in range(8):
            before = settled_accepted(server)
            send_paced(sock, server.udp, data, pace)
            taken = settled_accepted(server) - before
            if taken >= len(data):
                pace = min(rate, pace * 1.2)
                break
            pace = max(200.0, pace * 0.6)  # a loaded machine: slow down, send it again
            print(f"  hosts {first}-: {taken} of {len(data)} taken; again at {pace:.0f}/s",
                  flush=True)
        else:
            raise RuntimeError(f"hosts {first}-: datagrams lost 8 times, down to {pace}/s")
        if first % 20000 == 0:
            print(f"  {first + len(numbers):,} hosts sent ({time.monotonic() - started:.0f} s)",
                  flush=True)
    sock.close()
    total = server.status()["hosts"]["total"]
    if total != hosts:
        raise RuntimeError(f"the server holds {total} hosts, not {hosts}")
    return time.monotonic() - started


def wait_committed(server: Server) -> None:
    """Until the store has committed everything (no commit for 2 s: it commits only
    when there is something to write)."""
    deadline = time.monotonic() + 300
    last, moved = None, time.monotonic()
    while time.monotonic() < deadline:
        commits = server.status()["store"]["commits"]
        if commits != last:
            last, moved = commits, time.monotonic()
        elif time.monotonic() - moved > 2:
            return
        time.sleep(0.2)
    raise RuntimeError("the store did not settle within 300 s")


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  max {ordered[-1] * 1000:8.2f} ms"


def timed(server: Server, paths: Callable[[int], str], count: int) -> tuple[list[float], bytes]:
    times = []
    body = b""
    for i in range(count):
        body, took = server.get(paths(i))
        times.append(took)
    return times, body


def api_figures(server: Server, hosts: int, requests: int) -> None:
    names = [host_name(n, hosts) for n in range(hosts)]
    random.seed(16)
    body, _ = server.get("/api/0/hosts")  # warm
    full, body = timed(server, lambda i: "/api/0/hosts", 5)
    listed = len(json.loads(body)["hosts"])
    print(f"  GET /api/0/hosts (all {listed:,}): {len(body) / 1e6:.1f} MB; "
          f"{percentiles(full)} (5 calls)", flush=True)
    page, _ = server.get("/api/0/hosts?limit=100")
    if b'"next"' not in page:
        print("  GET /api/0/hosts?limit=100: no paging (the whole list comes back)", flush=True)
    else:
        cases = {
            "?limit=100 (first page)": lambda i: "/api/0/hosts?limit=100",
            "?limit=100&after=<random name>":
                lambda i: f"/api/0/hosts?limit=100&after={random.choice(names)}",
            "?limit=100&state=UP": lambda i: "/api/0/hosts?limit=100&state=UP",
            "?limit=100&state=DOWN (none match)": lambda i: "/api/0/hosts?limit=100&state=DOWN",
            "?limit=100&q=99 (1 in 10 match)": lambda i: "/api/0/hosts?limit=100&q=99",
            "?limit=100&alerting=CRITICAL": lambda i: "/api/0/hosts?limit=100&alerting=CRITICAL",
        }
        for label, path in cases.items():
            times, body = timed(server, path, requests)
            shown = len(json.loads(body)["hosts"])
            print(f"  GET /api/0/hosts{label}: {shown} hosts, {len(body) / 1e3:.0f} KB; "
                  f"{percentiles(times)}", flush=True)
    times, body = timed(server, lambda i: "/api/0/status", requests)
    print(f"  GET /api/0/status: {len(body) / 1e3:.1f} KB; {percentiles(times)}", flush=True)


def disk_figures(state: Path) -> None:
    path = state / STORE_FILE
    size = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    print(f"  SQLite file: {size / 1e6:,.1f} MB"
          f"{f' (+ WAL {wal.stat().st_size / 1e6:.1f} MB)' if wal.exists() else ''}",
          flush=True)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = conn.execute("SELECT name, SUM(pgsize), COUNT(*) FROM dbstat GROUP BY name "
                        "ORDER BY SUM(pgsize) DESC").fetchall()
    counts = {}
    for (table,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'"):
        counts[table] = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    conn.close()
    for name, bytes_, pages in rows:
        if bytes_ < 100_000:
            continue
        rows_text = f", {counts[name]:,} rows" if name in counts else ""
        print(f"    {name:<28} {bytes_ / 1e6:9.1f} MB ({pages:,} pages{rows_text})", flush=True)


def settle_rss(pid: int, seconds: float = 3.0) -> tuple[float, float]:
    time.sleep(seconds)
    return rss_mib(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=4000.0,
                        help="datagrams/s while building the fleet")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--state", type=Path, help="keep (and reuse) the state here")
    args = parser.parse_args()
    os.sched_setaffinity(0, {SENDER_CPU})
    compile_package()
    print(f"scale: {args.hosts:,} hosts; load average {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.state or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        server = Server(directory, args.hosts)
        reuse = (directory / "state" / STORE_FILE).exists()
        took = server.start()
        try:
            if reuse:
                print(f"  reusing {directory} (start-up until the API answered: {took:.2f} s)",
                      flush=True)
            else:
                idle = settle_rss(server.pid)
                print(f"  idle server: RSS {idle[0]:.1f} MiB", flush=True)
                built = build(server, args.hosts, args.rate)
                print(f"  fleet sent in {built:.0f} s", flush=True)
            wait_committed(server)
            total = server.status()["hosts"]["total"]
            if total != args.hosts:
                raise RuntimeError(f"the server holds {total} hosts, not {args.hosts}")
            rss, hwm = settle_rss(server.pid)
            print(f"  server with {total:,} hosts: RSS {rss:.1f} MiB (peak {hwm:.1f} MiB)",
                  flush=True)
            api_figures(server, args.hosts, args.requests)
        finally:
            server.stop()
        disk_figures(directory / "state")
        restarts, complete, cpu = [], [], []
        for _ in range(args.restarts):
            took = server.start()
            restarts.append(took)
            cpu.append(server.started_cpu)
            answered = time.monotonic()
            while server.status()["hosts"]["total"] < args.hosts:
                time.sleep(0.01)
            complete.append(took + time.monotonic() - answered)
            rss, hwm = settle_rss(server.pid)
            server.stop()
            print(f"  restart: API answered after {took:.2f} s ({cpu[-1]:.2f} s of CPU), all "
                  f"{args.hosts:,} hosts after {complete[-1]:.2f} s; RSS then {rss:.1f} MiB "
                  f"(peak {hwm:.1f})", flush=True)
        if restarts:
            print(f"  restart until the API answers: median {statistics.median(restarts):.2f} s"
                  f" ({statistics.median(cpu):.2f} s of CPU; all hosts: "
                  f"{statistics.median(complete):.2f} s)", flush=True)
    print(f"load average at the end {load()}", flush=True)


if __name__ == "__main__":
    main()
