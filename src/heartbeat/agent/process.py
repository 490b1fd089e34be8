"""Running a child process without a shell and without blocking the reactor.

One ProcessProtocol serves every agent feature that runs a program: CMD and UPD
answers, nagios checks, ``ping`` and ``zpool``. The argv goes to
``spawnProcess`` as a list (no shell ever parses it); a timeout kills the
child and the processes it started; output is capped so a chatty child cannot
fill memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
from twisted.internet import error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ProcessResult", "run_process"]

MAX_CAPTURE = 256 * 1024
KILL_GRACE = 5.0
"""Seconds a timed-out child stays stopped while its children are looked up."""

log = Logger()


def _kill_descendants(pid: int) -> None:
    """SIGKILL every process below ``pid`` (blocking: reads /proc; run it in a thread)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


@dataclass(frozen=True)
class ProcessResult:
    """How a child ended and what it wrote."""

    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False
    error: str | None = None
    """Set when the program could not be started at all."""

    @property
    def rc(self) -> int:
        """A shell-style code: 124 timed out, 127 not started, 128+N killed by signal N."""
        if self.timed_out:
            return 124
        if self.error is not None:
            return 127
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code if self.exit_code is not None else 1

    def text(self, stream: str = "stdout") -> str:
        return (self.stdout if stream == "stdout" else self.stderr).decode("utf-8", "replace")

    def describe(self) -> str:
        """One line saying why the child did not simply exit."""
        if self.error is not None:
            return self.error
        if self.timed_out:
            return f"timed out, killed: {self.argv[0]}"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}: {self.argv[0]}"
        return f"exit code {self.exit_code}: {self.argv[0]}"


class _Capture(ProcessProtocol):
    def __init__(self, reactor: Any, argv: tuple[str, ...], done: Deferred[ProcessResult],
                 limit: int) -> None:
        self.reactor = reactor
        self.argv = argv
        self.done = done
        self.limit = limit
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.sizes = [0, 0]
        self.timed_out = False
        self.killed = False
        self.timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def _keep(self, index: int, chunks: list[bytes], data: bytes) -> None:
        room = self.limit - self.sizes[index]
        if room > 0:
            chunks.append(data[:room])
            self.sizes[index] += min(room, len(data))

    def outReceived(self, data: bytes) -> None:
        self._keep(0, self.out, data)

    def errReceived(self, data: bytes) -> None:
        self._keep(1, self.err, data)

    def kill(self) -> None:
        """Kill the child and every process below it (a check script's own children).

        The child is stopped first so its children stay its own while a pool thread
        finds and kills them; then the child is killed and our pipe ends closed, so
        processEnded fires even if something still holds the other ends. A pool too
        busy to answer within KILL_GRACE does not delay the child's kill.
        """
        self.timer = None
        self.timed_out = True
        pid = getattr(self.transport, "pid", None)
        if pid is None:
            self._kill_child()
            return
        with contextlib.suppress(error.ProcessExitedAlready):
            self.transport.signalProcess("STOP")  # type: ignore[union-attr]
        fallback = self.reactor.callLater(KILL_GRACE, self._kill_child)

        def done(_: object) -> None:
            if fallback.active():
                fallback.cancel()
            self._kill_child()

        deferToThreadPool(self.reactor, self.reactor.getThreadPool(), _kill_descendants,
                          pid).addErrback(
            lambda failure: log.failure("cannot kill the children of {pid}", failure,
                                        pid=pid)).addBoth(done)

    def _kill_child(self) -> None:
        if self.killed:
            return
        self.killed = True
        with contextlib.suppress(error.ProcessExitedAlready):
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def processEnded(self, reason: Failure) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        value = reason.value
        exit_code = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        self.done.callback(ProcessResult(
            self.argv, exit_code, sig, b"".join(self.out), b"".join(self.err),
            self.timed_out))


def run_process(
    reactor: Any,
    argv: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    path: str | None = None,
    limit: int = MAX_CAPTURE,
) -> Deferred[ProcessResult]:
    """Run ``argv`` (looked up on PATH), kill it after ``timeout`` s; never fails.

    Problems starting the program come back as a result with ``error`` set, so a
    caller handles every outcome in one callback.
    """
    args = tuple(argv)
    environment = dict(os.environ if env is None else env)
    executable = shutil.which(args[0], path=environment.get("PATH", os.defpath)) \
        if args else None
    if executable is None:
        what = args[0] if args else "(empty command)"
        return succeed(ProcessResult(args, None, error=f"not found or not executable: {what}"))
    done: Deferred[ProcessResult] = Deferred()
    protocol = _Capture(reactor, args, done, limit)
    protocol.timer = reactor.callLater(timeout, protocol.kill)
    try:
        reactor.spawnProcess(protocol, executable, args, env=environment, path=path)
    except OSError as e:
        protocol.timer.cancel()
        return succeed(ProcessResult(args, None, error=f"cannot start {args[0]}: {e}"))
    return done
