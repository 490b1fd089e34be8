"""A bare Twisted UDP receiver that only counts: the ceiling bench/ingest.py compares to.

Usage: python bench/bare_receiver.py PORT
A datagram b"?" is answered with the count so far (as ASCII).
"""

from __future__ import annotations

import socket
import sys

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol


class Counter(DatagramProtocol):
    noisy = False

    def __init__(self) -> None:
        self.count = 0

    def datagramReceived(self, data: bytes, addr: object) -> None:
        if data == b"?":
            self.transport.write(str(self.count).encode(), addr)
            return
        self.count += 1


def main() -> None:
    port = reactor.listenUDP(int(sys.argv[1]), Counter(), interface="127.0.0.1",
                             maxPacketSize=65535)
    port.socket.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33),
                           4 * 1024 * 1024)
    reactor.run()


if __name__ == "__main__":
    main()
