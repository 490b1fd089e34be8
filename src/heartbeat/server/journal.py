"""The message journal: every received message as one JSON line, rotated by size.

The hot path only appends a tuple to a buffer. A timer hands the buffer to the
journal's own worker thread, which renders the lines, writes them and rotates
the file between lines, so no line is ever torn or split by a rotation and
their order is the order of arrival. A line left torn by a killed process is
closed off at the next start and skipped by readers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from heartbeat.events import RECEIVED, Event
from heartbeat.server.serial import Worker
from heartbeat.server.timers import periodic, start_timers, stop_timers
from heartbeat.text import json_bytes

__all__ = ["JournalFile", "JournalService", "read_backwards"]

log = Logger()

# (timestamp, source_ip, source_port, raw JSON text or None, message dict or None, event or None)
Entry = tuple[float, str | None, int | None, bytes | None, dict[str, Any] | None, Event | None]

_BLOCK = 64 * 1024


class _Clockface:
    """``datetime`` strings, rendered once per second rather than once per line."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, ts: float) -> str:
        second = int(ts)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        return self._text


class JournalFile:
    """The journal file and its numbered backups; used only on the worker thread."""

    def __init__(self, directory: Path, filename: str, max_size: int, max_backups: int) -> None:
        self.path = directory / filename
        self.max_size = max_size
        self.max_backups = max_backups
        self._clockface = _Clockface()
        self._file: IO[bytes] | None = None
        self._size = 0
        self.lines_written = 0
        self.rotations = 0
        self.torn_lines_closed = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open between batches
        self._size = self._file.tell()
        if self._size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                self._file.write(b"\n")
                self._size += 1
                self.torn_lines_closed += 1
                log.warn("journal: {path} ended in a torn line (killed process?); "
                         "closed it off, readers skip it", path=str(self.path))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def render(self, entry: Entry) -> bytes:
        ts, ip, port, raw, message, event = entry
        head = b'{"timestamp":%.3f,"datetime":"%s"' % (ts, self._clockface(ts).encode())
        if event is not None:
            return head + b',"event":' + json_bytes(event.to_json()) + b"}\n"
        if raw is None or b"\n" in raw or b"\r" in raw:
            raw = json_bytes(message)
        return (head + b',"source_ip":' + json_bytes(ip) + b',"source_port":' + json_bytes(port)
                + b',"message":' + raw + b"}\n")

    def write(self, entries: list[Entry]) -> None:
        """Append ``entries``, rotating between lines whenever the next would pass max_size."""
        if self._file is None:
            self.open()
        assert self._file is not None
        chunk: list[bytes] = []
        chunk_size = 0
        for entry in entries:
            line = self.render(entry)
            if self._size + chunk_size + len(line) > self.max_size and self._size + chunk_size:
                self._file.write(b"".join(chunk))
                self._size += chunk_size
                chunk, chunk_size = [], 0
                self._rotate()
            chunk.append(line)
            chunk_size += len(line)
        self._file.write(b"".join(chunk))
        self._file.flush()
        self._size += chunk_size
        self.lines_written += len(entries)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        if self.max_backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.max_backups - 1, 0, -1):
                older = self.backup(n)
                if older.exists():
                    older.replace(self.backup(n + 1))
            self.path.replace(self.backup(1))
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0
        self.rotations += 1

    def backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def files_newest_first(self) -> list[Path]:
        files = [self.path]
        files.extend(self.backup(n) for n in range(1, self.max_backups + 1))
        return [f for f in files if f.exists()]


def read_backwards(path: Path) -> Iterator[bytes]:
    """The complete lines of ``path``, last first, reading blocks from the end."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        position = f.tell()
        tail = b""
        while position > 0:
            step = min(_BLOCK, position)
            position -= step
            f.seek(position)
            block = f.read(step) + tail
            lines = block.split(b"\n")
            tail = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if tail:
            yield tail


class JournalService(Service):
    """Buffers entries on the reactor thread; writes them on the journal's worker.

    If the disk falls behind (a stalled file system), at most ``max_pending``
    entries wait for the worker; batches beyond that are dropped and counted
    (``dropped``) rather than held in memory without limit.
    """

    name = "journal"

    def __init__(
        self, journal: JournalFile, worker: Worker, clock: IReactorTime,
        flush_interval: float = 0.5, max_buffer: int = 20000, *,
        max_pending: int = 200_000,
    ) -> None:
        self.journal = journal
        self._worker = worker
        self._clock = clock
        self._flush_interval = flush_interval
        self._max_buffer = max_buffer
        self._max_pending = max_pending
        self._buffer: list[Entry] = []
        self._pending = 0
        self._timers = [periodic("journal flush", flush_interval, self.flush, clock)]
        self.write_failures = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Lines accepted but not yet written: in the buffer and at the worker."""
        return len(self._buffer) + self._pending

    def record(self, event: Event) -> None:
        """Buffer one event's line (a ``message`` as received, any other as an event)."""
        if event.kind == RECEIVED:
            data, raw = event.data, event.raw
            # Keep only the raw text when it can be written as it is: holding thousands
            # of decoded messages until the flush made for long garbage-collector pauses.
            spliceable = raw is not None and b"\n" not in raw and b"\r" not in raw
            self._buffer.append((event.ts, data["source_ip"], data["source_port"],
                                 raw if spliceable else None,
                                 None if spliceable else data["message"], None))
        else:
            self._buffer.append((event.ts, None, None, None, None, event))
        if len(self._buffer) >= self._max_buffer:
            self.flush()

    def flush(self) -> Deferred[None]:
        entries, self._buffer = self._buffer, []
        if not entries:
            return self._worker.run(lambda: None)
        count = len(entries)
        if self._pending + count > self._max_pending:
            self.dropped += count
            log.error("journal: the disk is {pending} lines behind; dropped {count} lines "
                      "({dropped} in all)", pending=self._pending, count=count,
                      dropped=self.dropped)
            return self._worker.run(lambda: None)
        self._pending += count
        d = self._worker.run(self.journal.write, entries)
        d.addErrback(self._failed, count)
        d.addBoth(self._written, count)
        return d

    def _written(self, result: None, count: int) -> None:
        self._pending -= count
        return result

    def _failed(self, failure: Any, count: int) -> None:
        self.write_failures += 1
        log.failure("journal: writing {count} lines to {path} failed", failure,
                    count=count, path=str(self.journal.path))

    def recent(
        self, limit: int, host: str | None = None, hosts: frozenset[str] | None = None,
        types: frozenset[str] | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        """The newest ``limit`` journaled messages, newest first.

        ``host`` picks one host's; ``hosts`` keeps only those hosts' (a viewer's);
        ``types`` only messages of those IDs (``MSG``, ``BOOT``...).
        """
        self.flush()
        return self._worker.run(self._read_recent, limit, host, hosts, types)

    def _read_recent(
        self, limit: int, host: str | None, hosts: frozenset[str] | None = None,
        types: frozenset[str] | None = None,
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        # Cheap pre-filters on the raw line, each a superset of what it stands for.
        needle = None if host is None else json_bytes(host)
        kinds = None if types is None else [json_bytes(t) for t in types]
        for path in self.journal.files_newest_first():
            try:
                lines = read_backwards(path)
                for line in lines:
                    if needle is not None and needle not in line:
                        continue
                    if kinds is not None and not any(k in line for k in kinds):
                        continue
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a torn line left by a killed process
                    message = entry.get("message") if isinstance(entry, dict) else None
                    if not isinstance(message, dict):
                        continue
                    if host is not None and message.get("name") != host:
                        continue
                    if hosts is not None and message.get("name") not in hosts:
                        continue
                    if types is not None and message.get("ID") not in types:
                        continue
                    found.append(entry)
                    if len(found) >= limit:
                        return found
            except FileNotFoundError:
                continue  # rotated away while reading
        return found

    def startService(self) -> None:
        super().startService()
        self._worker.start()
        self._worker.run(self.journal.open).addErrback(
            lambda f: log.failure("journal: cannot open {path}", f, path=str(self.journal.path)))
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        """The last flush (after one in progress), then the file and the thread."""
        super().stopService()
        d = stop_timers(self._timers)
        d.addBoth(lambda _: self.flush())
        d.addBoth(lambda _: self._worker.run(self.journal.close))
        d.addBoth(lambda _: self._worker.stop())  # after the close: the thread is idle
        return d
