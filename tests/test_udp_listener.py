"""The UDP listener on a real loopback socket: a backlog of datagrams is read in slices,
so a flood never keeps the API, the feed and the timers waiting for a whole backlog; and
its receive buffer is the size ``udp_rcvbuf`` asks for, or the server says why not."""

from __future__ import annotations

import socket
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import formatEvent, globalLogPublisher

from heartbeat.server import ingest
from heartbeat.server.ingest import READ_SLICE, make_udp_service, set_receive_buffer

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


def _rmem_max() -> int:
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read())


def _may_force_buffers() -> bool:
    """Whether this process holds CAP_NET_ADMIN (bit 12), which SO_RCVBUFFORCE needs."""
    with open("/proc/self/status") as f:
        effective = next(line for line in f if line.startswith("CapEff:")).split()[1]
    return bool(int(effective, 16) >> 12 & 1)


@pytest.mark.skipif(sys.platform != "linux", reason="SO_RCVBUFFORCE and /proc are Linux's")
def test_udp_rcvbuf_passes_rmem_max_when_allowed() -> None:
    """With CAP_NET_ADMIN (root) the buffer asked for is the buffer given, past the
    kernel's cap for others (Python's socket module does not name SO_RCVBUFFORCE)."""
    if not _may_force_buffers():
        pytest.skip("needs CAP_NET_ADMIN")
    wanted = _rmem_max() + (1 << 20)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        granted = set_receive_buffer(sock, wanted)
        assert granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * wanted


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/sys/net/core/rmem_max is Linux's")
def test_a_buffer_short_of_udp_rcvbuf_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SO_RCVBUFFORCE the kernel caps the buffer at rmem_max without an error:
    the server says so, naming the key and the sysctl, and what it got."""
    monkeypatch.setattr(ingest, "SO_RCVBUFFORCE", None)
    rmem_max = _rmem_max()
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            granted = set_receive_buffer(sock, rmem_max + (1 << 20))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert granted == 2 * rmem_max
    (warning,) = [formatEvent(e) for e in events if e.get("log_namespace") == ingest.__name__]
    assert "udp_rcvbuf" in warning and "net.core.rmem_max" in warning
    assert f"gave {rmem_max} " in warning


def test_a_buffer_given_in_full_is_not_logged() -> None:
    """A size within what the kernel allows anyone draws no warning."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            set_receive_buffer(sock, 64 * 1024)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e for e in events if e.get("log_namespace") == ingest.__name__] == []


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/net/udp is Linux's")
def test_kernel_drops_counts_what_a_full_buffer_lost() -> None:
    """Datagrams past a full receive buffer never reach the server: the kernel's count
    of them is read for the socket, and is exactly what was sent and not readable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        assert ingest.kernel_drops(receiver) == 0
        sent = 0
        for n in range(200):
            sender.sendto(DATAGRAM % n, receiver.getsockname())
            sent += 1
        readable = 0
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
            readable += 1
        assert 0 < readable < sent
        assert ingest.kernel_drops(receiver) == sent - readable
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        assert ingest.kernel_drops(other) is None  # not in the UDP tables
