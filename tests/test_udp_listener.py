"""The UDP listener on a real loopback socket: a backlog of datagrams is read in slices,
so a flood never keeps the API, the feed and the timers waiting for a whole backlog."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol

from heartbeat.server.ingest import READ_SLICE, make_udp_service

BACKLOG = 1000
DATAGRAM = b'{"ID":"HTB","name":"flood%04d","interval":30}'


class _Counting(DatagramProtocol):
    """Counts datagrams; at the first, asks the reactor to note the count at its next turn."""

    def __init__(self) -> None:
        self.received = 0
        self.bytes = 0
        self.at_next_turn: defer.Deferred[int] = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received += 1
        self.bytes += len(datagram)
        if self.received == 1:
            reactor.callLater(0, lambda: self.at_next_turn.callback(self.received))


@pytest_twisted.ensureDeferred
async def test_a_backlog_is_read_in_slices_between_other_work() -> None:
    counting = _Counting()
    service = make_udp_service(counting, "127.0.0.1", 0, 4 * 1024 * 1024,  # type: ignore[arg-type]
                               reactor)
    service.privilegedStartService()
    service.startService()
    try:
        port = service._port.getHost().port  # type: ignore[attr-defined]
        # Queued while the reactor is busy with this test: a backlog of about 50 KB (the
        # kernel may drop some past its buffer; more than a slice is always kept).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for n in range(BACKLOG):
                sender.sendto(DATAGRAM % n, ("127.0.0.1", port))
        read_before_other_work = await counting.at_next_turn
        for _ in range(500):  # the rest, in later turns
            if counting.received == BACKLOG:
                break
            await task.deferLater(reactor, 0.01)
    finally:
        await service.stopService()
    per_slice = READ_SLICE // len(DATAGRAM % 0) + 1
    assert counting.received > per_slice  # a backlog of more than one slice was read
    assert 1 <= read_before_other_work <= per_slice
