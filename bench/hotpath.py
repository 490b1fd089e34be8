"""The ingest hot path in-process: microseconds per datagram, no sockets, no threads.

    .venv/bin/python bench/hotpath.py [--count 20000] [--repeat 7] [--signed] [--server [--once N]]
                                        [--kinds htb,plg]

Feeds ``IngestProtocol.datagramReceived`` the payloads of bench/ingest.py (a
plain HTB and a ~1.5 KB zlib PLG, 1,000 host names) with the journal and the
store recorder subscribed as in the server (their buffers are emptied between
rounds, nothing is written). It reports the best of ``--repeat`` rounds, so a
change to the hot path can be compared before/after on a machine that is not
idle: the minimum is the figure least disturbed by other processes. With
``--signed`` it also times the same datagrams sealed with a fleet key. The
socket-level figures stay bench/ingest.py's.

``--server`` times the whole server instead: the tree ``twistd heartbeat`` builds
(tests/memserver.py, every subscriber of ``compose.SUBSCRIPTIONS``: host views,
alerting, jobs, operations, the status board as well) on a memory reactor, each
host known before the first round. The timers (the store's and the journal's
flushes, run inline) fire between rounds, outside the timing: the figure is the
reactor thread's work a datagram, the writer threads' is not in it. ``--once N``
sends N datagrams after the hosts are known and leaves: instructions a datagram are
the difference of two callgrind counts (docs/PERFORMANCE.md, issue 16).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import HOSTS, payloads
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from heartbeat.config.server import ServerConfig
from heartbeat.events import EventBus
from heartbeat.protocol import next_seq, seal
from heartbeat.server.compose import make_ingest, make_registry, wire
from heartbeat.server.ingest import IngestProtocol
from heartbeat.server.journal import JournalFile, JournalService
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import HostRecorder, StoreService
from heartbeat.server.web.websocket import EventHub


def build(config: ServerConfig, clock: Clock) -> tuple[IngestProtocol, Any]:
    """The ingest protocol with the server's subscribers, and a function emptying them."""
    bus = EventBus(on_error=lambda s, e, x: print(f"subscriber failed: {x!r}"))
    registry = make_registry(config)
    journal = JournalService(JournalFile(Path("/nonexistent"), "j", 1 << 30, 0),
                             ImmediateWorker(), clock, max_buffer=1 << 30)
    store = StoreService(None, ImmediateWorker(), clock)  # type: ignore[arg-type]
    recorder = HostRecorder(registry, store, 3600.0, 100)
    wire(bus, journal=journal, recorder=recorder, hub=EventHub(registry))
    protocol = make_ingest(config, registry, bus, clock)

    def drain() -> None:
        journal._buffer.clear()
        store._take()

    return protocol, drain


FLEET_KEY = "bench-fleet-key-0123456789abcdef"


def run(kind: str, count: int, repeat: int, signed: bool) -> float:
    """Best microseconds per datagram over ``repeat`` rounds of ``count`` datagrams.

    ``signed``: every datagram is sealed with a fleet key (sealing is done
    before each round, outside the timing; each has its own, growing seq).
    """
    data = payloads(kind)
    clock = Clock()
    clock.advance(time.time())
    overrides: dict[str, Any] = {"source_rate": 1e9}
    if signed:
        overrides["keys"] = {"fleet": FLEET_KEY}
    protocol, drain = build(ServerConfig(**overrides), clock)
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)
    addrs = [(f"10.0.{n // 250}.{n % 250 + 1}", 40000 + n) for n in range(HOSTS)]
    best = float("inf")
    seq = 0
    for _ in range(repeat):
        if signed:
            batch = []
            for n in range(count):
                seq = next_seq(seq, clock.seconds())
                batch.append(seal(data[n % HOSTS], "fleet", FLEET_KEY.encode(), seq))
        else:
            batch = [data[n % HOSTS] for n in range(count)]
        start = time.perf_counter()
        for n in range(count):
            protocol.datagramReceived(batch[n], addrs[n % HOSTS])
        best = min(best, (time.perf_counter() - start) / count)
        transport.written.clear()
        drain()
        clock.advance(1.0)
    if protocol.stats.accepted != count * repeat:
        raise SystemExit(f"{kind}: accepted {protocol.stats.accepted} of {count * repeat}: "
                         f"{protocol.stats.to_json()}")
    return best * 1e6


def run_server(kind: str, count: int, repeat: int, once: int | None = None) -> float:
    """:func:`run` over the whole server in process (``--server``): best microseconds.

    ``once``: make the hosts known, send ``once`` datagrams and leave the process at
    once, without stopping the server (whose last flush would be counted too): for an
    instruction count, run under ``valgrind --tool=callgrind`` with two values.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.memserver import InProcessServer  # only with --server

    data = payloads(kind)
    addrs = [(f"10.0.{n // 250}.{n % 250 + 1}", 40000 + n) for n in range(HOSTS)]
    with tempfile.TemporaryDirectory() as tmp:
        server = InProcessServer(Path(tmp), source_rate=1e9, ws_port=None)
        protocol, written = server.udp, server.udp_transport.written
        try:
            for n in range(HOSTS):  # every host known, as in a running fleet
                protocol.datagramReceived(data[n], addrs[n])
            if once is not None:
                server.reactor.advance(1.0)
                for n in range(once):
                    protocol.datagramReceived(data[n % HOSTS], addrs[n % HOSTS])
                if protocol.stats.accepted != HOSTS + once:
                    raise SystemExit(f"{kind}: {protocol.stats.to_json()}")
                shutil.rmtree(tmp, ignore_errors=True)
                os._exit(0)
            best = float("inf")
            for _ in range(repeat):
                written.clear()
                server.reactor.advance(1.0)  # the flushes, outside the timing
                start = time.perf_counter()
                for n in range(count):
                    protocol.datagramReceived(data[n % HOSTS], addrs[n % HOSTS])
                best = min(best, (time.perf_counter() - start) / count)
            stats = protocol.stats
            if stats.accepted != HOSTS + count * repeat:
                raise SystemExit(f"{kind}: accepted {stats.accepted} of "
                                 f"{HOSTS + count * repeat}: {stats.to_json()}")
        finally:
            server.stop()
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--signed", action="store_true", help="also time signed datagrams")
    parser.add_argument("--server", action="store_true",
                        help="the whole server's tree in process (every subscriber)")
    parser.add_argument("--kinds", default="htb,plg")
    parser.add_argument("--once", type=int, metavar="N",
                        help="with --server: send N datagrams of the first kind and exit "
                             "(for callgrind: the count of 1,200 less that of 200)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if args.server:
        for kind in kinds:
            us = run_server(kind, args.count, args.repeat, args.once)
            print(f"{kind.upper()} (whole server): {us:.2f} us/datagram "
                  f"({1e6 / us:,.0f}/s on one core)")
        return
    for signed in (False, True) if args.signed else (False,):
        for kind in kinds:
            us = run(kind, args.count, args.repeat, signed)
            label = f"{kind.upper()}{' signed' if signed else ''}"
            print(f"{label}: {us:.2f} us/datagram ({1e6 / us:,.0f}/s on one core)")


if __name__ == "__main__":
    main()
