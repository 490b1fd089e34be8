"""WebSocket fan-out: many feed subscribers, a steady event rate, and one that stops reading.

    .venv/bin/python bench/fanout.py [--clients 100] [--rate 5000] [--seconds 10]

Starts the real ``twistd -n heartbeat`` (journal and store on, 1,000 host
names, the feed on ``ws_port``) pinned to CPU 0, then on CPU 1:

- ``--clients`` WebSocket subscribers: ``--measure`` of them (5) time each
  ``message`` event from the moment its HTB was sent (the ``ts`` the sender
  put in it) to the moment the frame was read; the others only drain their
  sockets and count bytes. The measuring ones run at real-time priority
  (``SCHED_FIFO``, as root) and only note when each chunk arrived while the
  run lasts, decoding afterwards, so a frame is read within a wake-up of the
  server writing it: the figure is the server's datagram arrival (on loopback,
  the send) to frame written, not the readers' own queue. Every subscriber
  acknowledges what it read at once (``TCP_QUICKACK``, which the kernel turns
  off again, so after every read): on loopback the segment size is 64 KiB, so
  each flush is one segment under it, which a reader's kernel otherwise
  acknowledges only when its delayed-ACK timer (40 ms) fires, and the server's
  kernel holds later frames back meanwhile (about one event in ten 20-47 ms
  late). On a real network a flush of a few KB is several full segments,
  acknowledged every second one;
- one more subscriber that opens the feed and never reads (a stalled browser),
  with a small receive buffer: the server must drop it and the others must not
  notice;
- a sender of ``--rate`` HTB datagrams a second for ``--seconds``.

``--nice N`` (as root, e.g. -15) runs the server's threads, the draining
subscribers and the sender at that priority: on a machine shared with other
work it measures the server as a host that gives it its core would run it,
not the scheduler's turns among the other processes (say so beside a figure).
Where the kernel groups processes by session (``sched_autogroup_enabled``, as
here), a process's nice counts only within its own session: every session
busy on the machine gets an equal share whatever its nice (a fuzzer at nice 19
as much as the server), so it sets this session's group's nice too
(``/proc/self/autogroup``) for the length of the run.

It prints the latency from datagram sent to frame read (p50, p99, max: the
server's datagram-arrival-to-frame-written, plus a loopback hop and a wake-up
of the reader; without real-time priority, which it says, also the reader's
own scheduling behind the other readers), the server-side share of it (the
event's ``ts`` is when the server took the datagram), how many ``message``
events each measuring client got against the datagrams sent, whether the
stalled client was dropped, and the server's CPU time over the run.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import multiprocessing
import os
import selectors
import socket
import statistics
import struct
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import SENDER_CPU, start_server

HOSTS = 1000


def handshake(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket client socket past its opening handshake (the feed's snapshot unread)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise RuntimeError("the feed closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:200]!r}")
    return sock


class Frames:
    """Splits a server's (unmasked) WebSocket byte stream into message payloads."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out = []
        buf = self.buffer
        while len(buf) >= 2:
            length = buf[1] & 0x7F
            start = 2
            if length == 126:
                if len(buf) < 4:
                    break
                length = struct.unpack_from("!H", buf, 2)[0]
                start = 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length = struct.unpack_from("!Q", buf, 2)[0]
                start = 10
            if len(buf) < start + length:
                break
            if buf[0] & 0x0F == 1:  # text frames; pings and the like are skipped
                out.append(bytes(buf[start:start + length]))
            del buf[:start + length]
        return out


def measure(port: int, seconds: float, results: Any, ready: Any) -> None:
    """One measuring subscriber: latency of every ``message`` event it gets.

    It only reads while the run lasts, at real-time priority where the system
    allows it (``SCHED_FIFO``), noting when each chunk arrived: the frames are
    split and decoded after the run, so the time a frame was read is within a
    wake-up of the time the server wrote it, whatever the other readers cost.
    """
    os.sched_setaffinity(0, {SENDER_CPU})
    realtime = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):
        realtime = False
    sock = handshake(port)
    sock.settimeout(1.0)
    ready.release()
    gc.disable()  # a collection of the growing list of chunks would stop the reading
    chunks: list[tuple[float, bytes]] = []
    reset = events = False
    deadline = time.monotonic() + seconds + 30
    quiet = 0
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            reset = True  # the server dropped this subscriber (too far behind)
            break
        except TimeoutError:
            quiet += 1
            if events and quiet >= 3:  # the run is over (or the server gave up on us)
                break
            continue
        quiet = 0
        if not data:
            break
        chunks.append((time.time(), data))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # see the module's doc
        events = events or b'"type":"message"' in data
    sock.close()
    gc.enable()
    latencies, server_side, count = [], [], 0
    frames = Frames()
    snapshot = False
    for now, data in chunks:
        for payload in frames.feed(data):
            if not snapshot:
                snapshot = True  # the first message is the snapshot
                continue
            if b'"type":"message"' not in payload[:40]:
                continue
            event = json.loads(payload)
            sent = event["message"]["ts"]
            latencies.append(now - sent)
            server_side.append(event["ts"] - sent)
            count += 1
    results.put((latencies, server_side, count, reset, realtime))


def drain(port: int, clients: int, seconds: float, results: Any, ready: Any, *,
          nice: int = 0) -> None:
    """Subscribers that only read their sockets, and count the bytes."""
    os.sched_setaffinity(0, {SENDER_CPU})
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(clients):
        sock = handshake(port)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        socks.append(sock)
        ready.release()
    total, closed = 0, 0
    buffer = bytearray(1 << 20)
    quiet_since = None
    deadline = time.monotonic() + seconds + 30
    while time.monotonic() < deadline and closed < clients:
        events = selector.select(1.0)
        if not events:
            if total and quiet_since is None:
                quiet_since = time.monotonic()
            if quiet_since is not None and time.monotonic() - quiet_since > 1.0:
                break
            continue
        quiet_since = None
        for key, _ in events:
            try:
                n = key.fileobj.recv_into(buffer)  # type: ignore[union-attr]
                key.fileobj.setsockopt(socket.IPPROTO_TCP,  # type: ignore[union-attr]
                                       socket.TCP_QUICKACK, 1)
            except (ConnectionResetError, OSError):
                n = 0
            if not n:
                selector.unregister(key.fileobj)
                closed += 1
            total += n
    for sock in socks:
        sock.close()
    results.put((total, closed))


def send(port: int, rate: float, seconds: float) -> int:
    """``rate`` HTB a second in 1 ms steps, each stamped with the time it was sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # ACKs are not read
    start = time.perf_counter()
    total = int(rate * seconds)
    n = 0
    while n < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while n < due:
            datagram = json.dumps({"ID": "HTB", "name": f"host{n % HOSTS:05d}", "interval": 3600,
                                   "seq": n, "ts": time.time(), "rtt": 0.42,
                                   "version": "0.1.0"}, separators=(",", ":")).encode()
            sock.sendto(datagram, ("127.0.0.1", port))
            n += 1
        time.sleep(0.001)
    sock.close()
    return n


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"p50 {statistics.median(ordered) * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms  "
            f"max {ordered[-1] * 1000:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--measure", type=int, default=5)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-stalled", action="store_true", help="leave out the stalled client")
    parser.add_argument("--watchdog", type=float, default=None, metavar="MS",
                        help="count the server's reactor turns over MS ms, with the stacks "
                             "of its threads, and its garbage collections "
                             "(bench/fanout_watchdog.py)")
    parser.add_argument("--nice", type=int, default=0,
                        help="priority of the server, the drainers and the sender (root: < 0)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {SENDER_CPU})
    autogroup = Path("/proc/self/autogroup")
    group_nice = None
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        if autogroup.exists():
            group_nice = autogroup.read_text().split()[-1]
            autogroup.write_text(str(args.nice))
    try:
        run(args)
    finally:
        if group_nice is not None:
            autogroup.write_text(group_nice)


def run(args: argparse.Namespace) -> None:
    print(f"fan-out: {args.clients} subscribers, {args.rate:,.0f} HTB/s for {args.seconds:.0f} s;"
          f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
          f"{f'; server, drainers and sender at nice {args.nice}' if args.nice else ''}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws_port = socket.socket()
        ws_port.bind(("127.0.0.1", 0))
        port = ws_port.getsockname()[1]
        ws_port.close()
        watchdog = watch(Path(tmp), args.watchdog) if args.watchdog is not None else None
        server = start_server(Path(tmp), ws_port=port, source_rate=1e9,
                              http_max_connections=1000, http_max_connections_per_ip=1000)
        if args.nice:  # every thread it has; the ones it starts later inherit it
            # A thread the server runs below its main one (its workers: WORKER_NICE)
            # keeps its distance from the main thread.
            base = os.getpriority(os.PRIO_PROCESS, server.process.pid)
            for task in Path(f"/proc/{server.process.pid}/task").iterdir():
                tid = int(task.name)
                below = os.getpriority(os.PRIO_PROCESS, tid) - base
                os.setpriority(os.PRIO_PROCESS, tid, min(19, args.nice + below))
        try:
            # Bring every host in first, so the run's events are steady-state ones.
            send(server.port, 2000, HOSTS / 2000)
            results: Any = multiprocessing.Queue()
            ready = multiprocessing.Semaphore(0)
            workers = [multiprocessing.Process(target=measure,
                                               args=(port, args.seconds, results, ready))
                       for _ in range(args.measure)]
            workers.append(multiprocessing.Process(
                target=drain, args=(port, args.clients - args.measure, args.seconds, results,
                                    ready), kwargs={"nice": args.nice}))
            for worker in workers:
                worker.start()
            for _ in range(args.clients):
                if not ready.acquire(timeout=60):
                    raise RuntimeError("subscribers did not connect")
            stalled = None if args.no_stalled else handshake(port, rcvbuf=4096)
            time.sleep(1.0)  # snapshots read
            status = json.loads(_get(server.http_port, "/api/0/status"))
            print(f"  subscribers connected: {status['websocket']['clients']} "
                  f"(server pid {server.process.pid})", flush=True)
            cpu_before = cpu_seconds(server.process.pid)
            started = time.monotonic()
            sent = send(server.port, args.rate, args.seconds)
            took = time.monotonic() - started
            cpu = cpu_seconds(server.process.pid) - cpu_before
            gathered = [results.get(timeout=120) for _ in workers]
            for worker in workers:
                worker.join(30)
            status = json.loads(_get(server.http_port, "/api/0/status"))
            if stalled is not None:
                stalled.close()
        finally:
            server.stop()
            if watchdog is not None:
                server.process.wait(30)
                summarize(watchdog)
    measured = [r for r in gathered if len(r) == 5]
    latencies = [x for r in measured for x in r[0]]
    server_side = [x for r in measured for x in r[1]]
    counts = [r[2] for r in measured]
    resets = sum(r[3] for r in measured)
    realtime = all(r[4] for r in measured)
    drained = [r for r in gathered if len(r) == 2]
    print(f"  sent {sent:,} HTB in {took:.1f} s ({sent / took:,.0f}/s); the server used "
          f"{cpu:.1f} s of CPU ({cpu / took:.0%} of a core)", flush=True)
    print(f"  message events per measuring client: {counts} (sent {sent:,}); "
          f"{resets} of them dropped by the server", flush=True)
    if latencies:
        print(f"  datagram sent -> frame read:      {percentiles(latencies)}"
              f"{'' if realtime else '  (readers NOT at real-time priority)'}", flush=True)
        print(f"  datagram sent -> server took it:  {percentiles(server_side)}", flush=True)
        print(f"  server took it -> frame read:     "
              f"{percentiles([a - b for a, b in zip(latencies, server_side, strict=True)])}",
              flush=True)
    for total, closed in drained:
        print(f"  draining subscribers: {total / 1e6:,.1f} MB read, {closed} closed by the server",
              flush=True)
    ws = status["websocket"]
    print(f"  websocket status: {json.dumps(ws)}", flush=True)
    print(f"  ingest: accepted {status['ingest']['accepted']:,}, dropped "
          f"{status['ingest']['dropped_total']}", flush=True)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def watch(directory: Path, threshold_ms: float) -> Path:
    """Have the server started next load bench/fanout_watchdog.py; where it will report."""
    site = directory / "watchdog-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import fanout_watchdog\nfanout_watchdog.install()\n")
    out = directory / "watchdog.json"
    # Only the server reads them: this process has started its own helpers by now, or
    # starts them with multiprocessing's fork.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["HB_WATCHDOG_OUT"] = str(out)
    os.environ["HB_WATCHDOG_MS"] = str(threshold_ms)
    return out


def summarize(report: Path) -> None:
    """What the watchdog found: stalls, what the other threads ran then, collections."""
    if not report.exists():
        print("  watchdog: no report (the server did not exit cleanly)", flush=True)
        return
    found = json.loads(report.read_text())
    keep = os.environ.get("HB_WATCHDOG_KEEP")
    if keep:
        Path(keep).write_text(report.read_text())
    stalls = found["stall_ms"]
    print(f"  watchdog: {found['stalls']} reactor turns over {found['threshold_ms']:g} ms of "
          f"{found['turns']:,} (longest {stalls[-5:] if stalls else []} ms, "
          f"{sum(stalls):.0f} ms in all)", flush=True)
    for what, count in found["busy_threads_at_stalls"][:8]:
        print(f"    {count:4d}  {what}", flush=True)
    print("    the reactor then:", flush=True)
    for what, count in found["reactor_at_stalls"][:8]:
        print(f"    {count:4d}  {what}", flush=True)
    for gen, seen in found["gc"].items():
        print(f"  gc generation {gen}: {seen['count']} collections, longest {seen['max_ms']} ms, "
              f"{seen['total_ms']} ms in all", flush=True)
    print(f"  full collections (s after start, ms, collected, frozen): "
          f"{found['full_collections']}", flush=True)
    print(f"  reactor turns: {found['turn_ms']} ms, {found['busy_s']} s busy", flush=True)
    cpu = sorted(found["thread_cpu_s"].items(), key=lambda kv: -kv[1][0])
    print("  thread CPU / waiting for a CPU (s): " + ", ".join(
        f"{name} {ran:.2f}/{waited:.2f}" for name, (ran, waited) in cpu if ran >= 0.005),
        flush=True)


def _get(port: int | None, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return bytes(response.read())


if __name__ == "__main__":
    main()
