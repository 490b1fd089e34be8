"""A bench's fleet: N hosts' heartbeats, sent to a server on loopback until it holds them.

Shared by bench/outage.py and bench/live_fall.py. A burst of new hosts the socket's
buffer cannot hold is dropped by the kernel (at 100,000 hosts some are), so a fleet
is sent again, a heartbeat of a known host changing nothing, until the server says
it holds every host.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from tests.support import ServerProcess


def heartbeats(hosts: int, interval: float) -> list[bytes]:
    """One HTB for each of ``hosts`` hosts (``host000000``...), announcing ``interval``."""
    return [json.dumps({"ID": "HTB", "name": f"host{n:06d}", "seq": 1,
                        "interval": interval}).encode() for n in range(hosts)]


def send(server: ServerProcess, datagrams: list[bytes],
         aside: Callable[[], object] | None = None) -> None:
    """Every datagram once, 200 every 4 ms (about 50,000 a second); ``aside()`` after
    each 5,000 (a bench's status request while they go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n, datagram in enumerate(datagrams):
            sock.sendto(datagram, ("127.0.0.1", server.udp_port))
            if n % 200 == 199:
                time.sleep(0.004)
            if aside is not None and n % 5000 == 4999:
                aside()


def bring_in(server: ServerProcess, datagrams: list[bytes],
             held: Callable[[dict[str, Any]], bool], rounds: int = 10) -> float:
    """Send ``datagrams`` again until ``held(status)`` (at most ``rounds`` times); the
    time the last round ended (``time.monotonic``)."""
    ended = time.monotonic()
    for _ in range(rounds):
        send(server, datagrams)
        ended = time.monotonic()
        if held(server.get("/api/0/status")):
            break
    return ended
