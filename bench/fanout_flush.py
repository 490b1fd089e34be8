"""The feed's flush in-process: CPU per flush to many real subscribers, two ways.

    .venv/bin/python bench/fanout_flush.py [--clients 100] [--flushes 2000] [--events 20]
                                           [--repeat 5]

Serves the feed (``EventHub`` and ``FeedFactory`` under ``ConnectionLimit``, as
``ws_port`` is served) on loopback, pinned to CPU 0, with ``--clients``
WebSocket subscribers in a child process on CPU 1 that only drain their
sockets. Then, on the real reactor, ``--flushes`` times: ``--events`` HTB
``message`` events published and flushed, and one reactor turn (where a write
left in a transport's buffer goes out). It reports the reactor thread's CPU
time per flush (``time.thread_time``: what the server spends, whatever else the
machine runs) for the feed as it is, which writes each client's frames to its
socket in the flush, and for the same feed writing through the transport's
buffer as before (a writer registered per client and written in the next
turn), alternately ``--repeat`` times each; the best of each is the figure
least disturbed by other processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import handshake
from ingest import SENDER_CPU, SERVER_CPU, htb_payload
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred

from heartbeat.events import RECEIVED, Event
from heartbeat.server.registry import Registry
from heartbeat.server.web.app import ConnectionBudget, ConnectionLimit
from heartbeat.server.web.websocket import EventHub, FeedFactory, FeedProtocol

SENT_IN_FLUSH = FeedProtocol.write_frames


def through_buffer(self: FeedProtocol, frames: bytes) -> None:
    """The feed's write before it wrote to the socket in the flush."""
    if self.state == FeedProtocol.STATE_OPEN:
        self.transport.write(frames)  # type: ignore[union-attr]


def readers(port: int, clients: int, ready: Any, stop: Any) -> None:
    """``clients`` subscribers that only drain their sockets until ``stop`` is set."""
    os.sched_setaffinity(0, {SENDER_CPU})
    selector = selectors.DefaultSelector()
    for _ in range(clients):
        sock = handshake(port)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    ready.set()
    buffer = bytearray(1 << 20)
    while not stop.is_set():
        for key, _ in selector.select(0.2):
            try:
                if not key.fileobj.recv_into(buffer):  # type: ignore[union-attr]
                    selector.unregister(key.fileobj)
            except ConnectionResetError:
                selector.unregister(key.fileobj)


async def run(args: argparse.Namespace) -> None:
    registry = Registry(grace=1, default_interval=1)
    hub = EventHub(registry, clock=reactor)
    factory = FeedFactory(hub, "ws://127.0.0.1/")
    factory.setProtocolOptions(autoPingInterval=0)
    port = reactor.listenTCP(0, ConnectionLimit(factory, ConnectionBudget(1000, 1000)),
                             interface="127.0.0.1")
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    child = multiprocessing.Process(target=readers, args=(port.getHost().port, args.clients,
                                                          ready, stop))
    child.start()
    while not ready.is_set() or len(hub.clients) < args.clients:
        await task.deferLater(reactor, 0.05)
    await task.deferLater(reactor, 0.5)  # snapshots taken
    raws = [htb_payload(n) for n in range(args.events)]
    events = [Event(RECEIVED, f"host{n:05d}", time.time(), {
        "message": {"ID": "HTB"}, "source_ip": "127.0.0.1", "source_port": 1}, raw)
        for n, raw in enumerate(raws)]
    results: dict[str, list[float]] = {"in the flush": [], "through the buffer": []}
    for _ in range(args.repeat):
        for name, write in (("in the flush", SENT_IN_FLUSH), ("through the buffer",
                                                                through_buffer)):
            FeedProtocol.write_frames = write  # type: ignore[method-assign]
            await task.deferLater(reactor, 0.2)  # the previous round's writes done
            start = time.thread_time()
            for _ in range(args.flushes):
                for event in events:
                    hub.publish(event)
                hub.flush()
                await task.deferLater(reactor, 0)
            results[name].append((time.thread_time() - start) / args.flushes)
    FeedProtocol.write_frames = SENT_IN_FLUSH  # type: ignore[method-assign]
    dropped = hub.dropped_clients
    stop.set()
    child.join(10)
    await port.stopListening()
    print(f"{args.clients} subscribers, {args.events} events a flush, {args.flushes} flushes, "
          f"best of {args.repeat}; {dropped} subscribers dropped; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, values in results.items():
        best = min(values)
        print(f"  frames written {name:<19} {best * 1e6:7.0f} us a flush "
              f"({best / args.clients * 1e6:5.1f} us a subscriber; all: "
              f"{', '.join(f'{v * 1e6:.0f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--flushes", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {SERVER_CPU})
    task.react(lambda _: ensureDeferred(run(args)))


if __name__ == "__main__":
    main()
