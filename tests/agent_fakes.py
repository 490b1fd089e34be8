"""Fakes for agent unit tests: a Clock that also records UDP ports, processes and threads."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock


class FakeUDPPort:
    """What ``listenUDP`` returns: records writes; ``fail`` makes writes to an ip raise."""

    def __init__(self, protocol: Any, interface: str, fail: dict[str, OSError]) -> None:
        self.protocol = protocol
        self.interface = interface
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.fail = fail
        self.listening = True

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] in self.fail:
            raise self.fail[addr[0]]
        self.written.append((data, addr))

    def stopListening(self) -> None:
        self.listening = False


class FakeProcess:
    """A spawned child the test drives: ``finish(out=..., code=...)``."""

    def __init__(self, protocol: Any, executable: str, args: tuple[str, ...],
                 env: dict[str, str] | None) -> None:
        self.protocol = protocol
        self.executable = executable
        self.args = args
        self.env = env
        self.signals: list[str] = []
        self.stdin_closed = False
        self.pid: int | None = None
        protocol.makeConnection(self)

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def loseConnection(self) -> None:
        self.signals.append("close pipes")

    def finish(self, out: bytes = b"", err: bytes = b"", code: int | None = 0,
               signal: int | None = None) -> None:
        from twisted.internet.error import ProcessDone, ProcessTerminated
        from twisted.python.failure import Failure

        if out:
            self.protocol.outReceived(out)
        if err:
            self.protocol.errReceived(err)
        reason = ProcessDone(0) if code == 0 and signal is None else \
            ProcessTerminated(exitCode=code, signal=signal)
        self.protocol.processEnded(Failure(reason))


class AgentReactor(Clock):
    """Clock + listenUDP + spawnProcess, all recorded; no real I/O."""

    def __init__(self, ipv6: bool = True) -> None:
        super().__init__()
        self.ipv6 = ipv6
        self.fail: dict[str, OSError] = {}
        """Sends to these ips raise, on every port (also ones not created yet)."""
        self.ports: dict[int, FakeUDPPort] = {}
        self.processes: list[FakeProcess] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        if family == socket.AF_INET6 and not self.ipv6:
            raise CannotListenError(interface, port, OSError("no IPv6"))
        fake = self.ports[family] = FakeUDPPort(protocol, interface, self.fail)
        return fake

    def spawnProcess(self, protocol: Any, executable: str, args: Any, env: Any = None,
                     path: Any = None, **kwargs: Any) -> FakeProcess:
        process = FakeProcess(protocol, executable, tuple(args), env)
        self.processes.append(process)
        return process


def sync_threads(function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """A thread runner for unit tests: runs inline, result as a Deferred."""
    return defer.maybeDeferred(function, *args)
