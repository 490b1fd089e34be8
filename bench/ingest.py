"""Ingest throughput: the real server against a bare Twisted receiver, in one run.

    .venv/bin/python bench/ingest.py [--seconds 3] [--kinds htb,plg]
                                     [--stores sqlite,postgresql]

For each payload kind (a plain HTB of ~110 bytes; a PLG whose JSON is ~1.5 KB,
sent zlib-compressed as the agent does) this script:

1. starts ``bench/bare_receiver.py`` pinned to CPU 0 and measures its
   saturation rate (datagrams counted per second while this sender, pinned to
   CPU 1, sends as fast as it can);
2. starts the real ``twistd -n heartbeat`` (journal and store on, 1,000 host
   names) pinned to CPU 0 and measures its saturation rate the same way;
3. steps a paced send rate up and reports the highest rate the server takes
   for ``--seconds`` with zero loss (accepted == sent, and the backlog drained
   within 0.5 s of the last send).

``--stores sqlite,postgresql`` runs steps 2 and 3 once per store: the SQLite file
(the default) and a PostgreSQL store (``store_url``) on a cluster this script
starts in a temporary directory (``initdb``/``pg_ctl`` as tests/postgres.py does,
``fsync=off``; not pinned, so it shares both cores with the server and the
sender).

Beside each saturation rate it prints the receiver's CPU time (every thread:
reactor, store writer, journal) per datagram taken, which a loaded machine
moves far less than the rates: one core's worth of it is what a quiet core
would take. ``--cpu`` measures only that (the server at saturation, each kind
``--rounds`` times, no bare receiver, no paced search), and how much of it is
the reactor's thread and how much the writers' (store, journal). Run with
``PYTHONPATH=OTHER/src`` the script measures another checkout's server, so two
can be measured in turn on a busy machine.

``--sustain RATE`` paces ``RATE`` datagrams a second for ``--seconds`` (give it
20 or more) against one server and says what the paced search cannot: whether the
server keeps up, or only the socket's receive buffer took the difference for a
while. Every 50 ms it reads the socket's queue and drop count (``/proc/net/udp``)
and the datagrams taken, and prints sent, taken, the drops, the largest queue and
the slowest and fastest half second taken.

Everything is on loopback, bounded in count and time (a few minutes at most).
The figures go into docs/PERFORMANCE.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TWISTD = str(Path(PYTHON).with_name("twistd"))
HOSTS = 1000
SERVER_CPU, SENDER_CPU = 0, 1


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_name(n: int, hosts: int = HOSTS) -> str:
    return f"host{n % hosts:05d}"


def plg_payload(n: int, hosts: int = HOSTS) -> bytes:
    """A realistic PLG: cpu, memory, three partitions, two interfaces, os; JSON ~1.5 KB."""
    plugins = {
        "cpu_monitor": {"cpu_percent": 12.5 + n % 7, "load_1min": 0.31, "load_5min": 0.42,
                        "load_15min": 0.5, "per_core": [10.1, 14.9, 9.7, 15.2],
                        "frequency_mhz": 2893.4, "process_count": 212, "thread_count": 498,
                        "uptime_s": 1234567 + n},
        "memory_monitor": {"percent": 41.2, "total_mb": 15923.1, "available_mb": 9361.4,
                           "used_mb": 6561.7, "swap_percent": 0.0, "swap_total_mb": 2048.0,
                           "zfs_arc_mb": 0.0},
        "disk_monitor": {"partitions": {
            "/": {"percent": 61.3, "free_gb": 38.91, "free_mb": 39843.8, "total_gb": 100.6,
                  "fstype": "ext4", "device": "/dev/sda1"},
            "/var/lib/postgresql": {"percent": 72.9, "free_gb": 135.5, "free_mb": 138752.0,
                                    "total_gb": 500.0, "fstype": "xfs", "device": "/dev/sdb1"},
            "/boot": {"percent": 23.1, "free_gb": 0.74, "free_mb": 757.8, "total_gb": 0.96,
                      "fstype": "ext4", "device": "/dev/sda2"},
        }, "io": {"read_bytes": 912345678 + n, "write_bytes": 2345678901, "read_count": 81234,
                  "write_count": 293847}},
        "network_monitor": {"interfaces": {
            "eth0": {"bytes_sent": 123456789 + n, "bytes_recv": 987654321, "packets_sent": 4567,
                     "packets_recv": 8910, "errin": 0, "errout": 0, "dropin": 0, "dropout": 0},
            "eth1": {"bytes_sent": 23456789, "bytes_recv": 87654321, "packets_sent": 567,
                     "packets_recv": 910, "errin": 0, "errout": 0, "dropin": 3, "dropout": 0},
        }, "errors_total": 0, "dropped_total": 3,
            "connections": {"established": 42, "listen": 12, "time_wait": 7}},
        "os_info": {"system": "Linux", "release": "6.1.0-27-amd64", "machine": "x86_64",
                    "distribution": "Debian GNU/Linux 12 (bookworm)", "python": "3.11.2"},
    }
    message = {"ID": "PLG", "name": host_name(n, hosts), "seq": n, "ts": time.time(),
               "version": "0.1.0", "plugins": plugins}
    return json.dumps(message, separators=(",", ":")).encode()


def htb_payload(n: int, hosts: int = HOSTS, interval: float = 30) -> bytes:
    return json.dumps({"ID": "HTB", "name": host_name(n, hosts), "interval": interval, "seq": n,
                       "ts": time.time(), "rtt": 0.42, "version": "0.1.0"},
                      separators=(",", ":")).encode()


def payloads(kind: str) -> list[bytes]:
    if kind == "htb":
        return [htb_payload(n) for n in range(HOSTS)]
    return [zlib.compress(plg_payload(n)) for n in range(HOSTS)]


def pinned(args: list[str], cpu: int, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a process and pin it (and the threads it will start) to one CPU."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               **kwargs)
    os.sched_setaffinity(process.pid, {cpu})
    return process


NO_COLLECTOR: dict[str, Any] = {"collections": [0], "seconds": 0.0, "longest": 0.0}
"""The status of a server without its own collector (a tree before issue 16's)."""


class Target:
    """A receiver process and how to read how many datagrams it took."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int,
                 count: Any, http_port: int | None = None) -> None:
        self.name = name
        self.process = process
        self.port = port
        self.count = count
        self.http_port = http_port

    def status(self) -> dict[str, Any]:
        """The server's ``/api/0/status`` (the heartbeat server only)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/api/0/status",
                                    timeout=10) as answer:
            body: dict[str, Any] = json.load(answer)
        return body

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


def start_bare() -> Target:
    port = free_port()
    process = pinned([PYTHON, str(ROOT / "bench" / "bare_receiver.py"), str(port)], SERVER_CPU)
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.settimeout(0.5)

    def count() -> int:
        for _ in range(40):
            control.sendto(b"?", ("127.0.0.1", port))
            try:
                return int(control.recvfrom(64)[0])
            except TimeoutError:
                continue
        raise RuntimeError("bare receiver does not answer")

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            count()
            break
        except RuntimeError:
            continue
    return Target("bare Twisted receiver", process, port, count)


def start_server(directory: Path, **overrides: Any) -> Target:
    udp, http = free_port(), free_port(socket.SOCK_STREAM)
    config = directory / "bench.yaml"
    config.write_text(json.dumps({
        "hb_host": "127.0.0.1", "hb_port": udp, "hbd_host": "127.0.0.1", "hbd_port": http,
        "ws_port": None, "state_dir": str(directory / "state"),
        "journal_dir": str(directory / "journal"), "journal_max_size": 64 * 1024 * 1024,
        "journal_max_backups": 3, "source_rate": 1e9, **overrides,
    }))
    process = pinned(
        [TWISTD, "-n", "--pidfile=", "--logfile", str(directory / "twistd.log"), "heartbeat",
         "-c", str(config)], SERVER_CPU, cwd=directory)

    def count() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/0/status", timeout=10) as r:
            return int(json.load(r)["ingest"]["accepted"])

    deadline = time.monotonic() + 90
    while True:
        try:
            count()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                log = (directory / "twistd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"server did not start:\n{log}") from None
            time.sleep(0.1)
    return Target("heartbeat server (full path)", process, udp, count, http)


@contextlib.contextmanager
def store_overrides(store: str) -> Any:
    """The config keys of ``store`` (a PostgreSQL cluster started and stopped around)."""
    if store == "sqlite":
        yield {}
        return
    sys.path.insert(0, str(ROOT))
    from tests.postgres import PostgresCluster, postgres_bin

    bindir = postgres_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb)")
    cluster = PostgresCluster(bindir).start()
    try:
        yield {"store_url": cluster.new_database(), "node_name": "bench"}
    finally:
        cluster.destroy()


def settle(target: Target, timeout: float = 10.0) -> tuple[int, float]:
    """Wait until the count stops moving; return it and when it last moved."""
    last, moved = target.count(), time.monotonic()
    while time.monotonic() - moved < 0.3 and time.monotonic() - moved < timeout:
        time.sleep(0.05)
        now = target.count()
        if now != last:
            last, moved = now, time.monotonic()
    return last, moved


class Saturation(NamedTuple):
    """What a target took while :func:`blast` sent as fast as it could."""

    rate: float
    """Datagrams a second taken."""
    cpu_us: float
    """Microseconds of the target's CPU time a datagram taken, every thread."""
    reactor_us: float
    """Of ``cpu_us``, the reactor's thread (the process's first); the rest is the
    writer threads' (store, journal)."""


def _cpu_seconds(process: psutil.Process) -> tuple[float, float]:
    """The CPU time of ``process``: all its threads, and its first (the reactor's)."""
    times = process.cpu_times()
    first = next((t for t in process.threads() if t.id == process.pid), None)
    return (times.user + times.system,
            0.0 if first is None else first.user_time + first.system_time)


def blast(target: Target, data: list[bytes], seconds: float) -> Saturation:
    """Send as fast as possible for ``seconds``; what the target took meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # ACKs are not measured
    before, _ = settle(target)
    process = psutil.Process(target.process.pid)
    cpu, reactor = _cpu_seconds(process)
    address = ("127.0.0.1", target.port)
    n = 0
    size = len(data)
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        for _ in range(200):
            with contextlib.suppress(BlockingIOError):
                sock.sendto(data[n % size], address)
            n += 1
    sent_for = time.monotonic() - start
    taken = target.count() - before  # what it took while we were sending
    used, reactor_used = _cpu_seconds(process)
    sock.close()
    settle(target)
    per = 1e6 / max(1, taken)
    return Saturation(taken / sent_for, (used - cpu) * per, (reactor_used - reactor) * per)


def paced(target: Target, data: list[bytes], rate: int, seconds: float) -> tuple[int, int, float]:
    """Send ``rate``/s for ``seconds``; return (sent, taken, seconds to drain after)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before, _ = settle(target)
    address = ("127.0.0.1", target.port)
    size = len(data)
    total = int(rate * seconds)
    start = time.perf_counter()
    n = 0
    while n < total:
        due = int((time.perf_counter() - start) * rate) + 1
        while n < min(due, total):
            sock.sendto(data[n % size], address)
            n += 1
    finished = time.monotonic()
    sock.close()
    after, moved = settle(target)
    return total, after - before, max(0.0, moved - finished)


def zero_loss_rate(target: Target, data: list[bytes], start: int, seconds: float) -> int:
    """Highest rate (steps of 10 %) with no loss and a drained backlog."""
    best = 0
    rate = start
    for _ in range(20):
        sent, taken, drain = paced(target, data, rate, seconds)
        ok = taken == sent and drain < 0.5
        print(f"    paced {rate:>7}/s for {seconds:.0f} s: sent {sent}, taken {taken}, "
              f"drained in {drain:.2f} s -> {'ok' if ok else 'LOSS/LAG'}", flush=True)
        if not ok:
            break
        best = rate
        rate = int(rate * 1.1)
    return best


def udp_socket_state(port: int) -> tuple[int, int]:
    """Bytes queued on the IPv4 UDP socket bound to ``port``, and the datagrams it dropped."""
    wanted = f":{port:04X}"
    with open("/proc/net/udp") as table:
        for line in table:
            fields = line.split()
            if fields[1].endswith(wanted):
                return int(fields[4].split(":")[1], 16), int(fields[-1])
    raise RuntimeError(f"no UDP socket on port {port}")


def sustain(kind: str, data: list[bytes], rate: int, seconds: float) -> None:
    """``--sustain``: ``rate``/s for ``seconds`` against one server, its socket watched."""
    samples: list[tuple[float, int, int, int]] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))

        def watch() -> None:
            while not stop.is_set():
                queued, dropped = udp_socket_state(server.port)
                samples.append((time.monotonic(), queued, dropped, server.count()))
                stop.wait(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            watcher.start()
            sent, taken, drain = paced(server, data, rate, seconds)
            collector = server.status().get("collector", NO_COLLECTOR)  # an older tree
        finally:
            stop.set()
            watcher.join()
            server.stop()
    moving = [n for n in range(1, len(samples)) if samples[n][3] != samples[n - 1][3]]
    during = samples[moving[0]:moving[-1]] if moving else []  # the first datagram to the last
    busy = [(later[3] - earlier[3]) / (later[0] - earlier[0])
            for earlier, later in zip(during[::10], during[10::10], strict=False)]
    print(f"  {rate:,}/s for {seconds:.0f} s: sent {sent}, taken {taken} "
          f"({'no loss' if taken == sent else f'{sent - taken} lost'}), drained in "
          f"{drain:.2f} s; socket drops {samples[-1][2]}, largest queue "
          f"{max(s[1] for s in samples) / 1e6:.1f} MB; taken a half second "
          f"{min(busy, default=0):,.0f}-{max(busy, default=0):,.0f}/s; garbage collections "
          f"{sum(collector['collections'])} in {collector['seconds']:.2f} s, the longest "
          f"{collector['longest'] * 1000:.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--kinds", default="htb,plg")
    parser.add_argument("--stores", default="sqlite", help="sqlite, postgresql or both")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each store this many times, in turn (a loaded machine)")
    parser.add_argument("--start-scale", type=float, default=1.0,
                        help="the paced search starts at this fraction of 20,000 HTB/s and "
                             "5,000 PLG/s (a slower machine)")
    parser.add_argument("--cpu", action="store_true",
                        help="only the server's CPU time a datagram at saturation, --rounds "
                             "times each kind")
    parser.add_argument("--sustain", type=int, metavar="RATE",
                        help="pace RATE/s for --seconds against one server and watch its "
                             "socket: does it keep up, or does the buffer take the difference")
    args = parser.parse_args()
    os.sched_setaffinity(0, {SENDER_CPU})
    start_rates = {kind: max(1, int(rate * args.start_scale))
                   for kind, rate in (("htb", 20000), ("plg", 5000))}
    results: dict[str, dict[str, Any]] = {}
    for kind in args.kinds.split(","):
        data = payloads(kind)
        size = sum(map(len, data)) / len(data)
        inflated = (sum(len(zlib.decompress(d)) for d in data) / len(data)
                    if kind == "plg" else size)
        print(f"{kind.upper()}: {size:.0f} bytes on the wire, {inflated:.0f} bytes of JSON",
              flush=True)
        if args.cpu:
            cpu_only(kind, data, args.seconds, args.rounds)
            continue
        if args.sustain:
            for _ in range(args.rounds):
                sustain(kind, data, args.sustain, args.seconds)
            continue
        bare = start_bare()
        try:
            bare_rate, bare_us, _ = blast(bare, data, args.seconds)
        finally:
            bare.stop()
        print(f"  bare Twisted receiver: {bare_rate:,.0f}/s at saturation, "
              f"{bare_us:.1f} us of CPU a datagram", flush=True)
        results[kind] = {"bare": bare_rate}
        for round_, store in enumerate(args.stores.split(",") * args.rounds):
            with tempfile.TemporaryDirectory() as tmp, store_overrides(store) as overrides:
                server = start_server(Path(tmp), **overrides)
                try:
                    full_rate, full_us, _ = blast(server, data, args.seconds)
                    print(f"  heartbeat full path ({store}): {full_rate:,.0f}/s at saturation, "
                          f"{full_us:.1f} us of CPU a datagram", flush=True)
                    best = zero_loss_rate(server, data, start_rates[kind], args.seconds)
                finally:
                    server.stop()
            results[kind][f"{store} #{round_ // len(args.stores.split(',')) + 1}"] = {
                "full": full_rate, "zero_loss": best, "ratio": full_rate / bare_rate,
                "cpu_us": full_us}
            print(f"  zero-loss sustained ({store}): {best:,}/s; full/bare at saturation: "
                  f"{full_rate / bare_rate:.1%}", flush=True)
    if results:
        print(json.dumps(results, indent=2))


def cpu_only(kind: str, data: list[bytes], seconds: float, rounds: int) -> None:
    """``--cpu``: the server's CPU time a datagram at saturation, one server a round."""
    for round_ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            server = start_server(Path(tmp))
            try:
                rate, us, reactor_us = blast(server, data, seconds)
            finally:
                server.stop()
        print(f"  #{round_ + 1}: {us:.1f} us of server CPU a datagram at saturation "
              f"({rate:,.0f}/s taken; one core: {1e6 / us:,.0f}/s); the reactor's thread "
              f"{reactor_us:.1f} us, the writers' {us - reactor_us:.1f} us", flush=True)


if __name__ == "__main__":
    main()
