"""The message journal: every received message as one JSON line, rotated by size.

The hot path only appends a tuple to a buffer. A timer hands the buffer to the
journal's own worker thread, which renders the lines, writes them and rotates
the file between lines, so no line is ever torn or split by a rotation and
their order is the order of arrival. A line left torn by a killed process, or
by a write that failed part way (a full disk), is closed off before the next
line is written and skipped by readers; lines a failed write lost are counted
(``lines_lost``). A rotation that fails (the directory gone for a moment) is
logged and counted, and writing goes on in a file opened again.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from heartbeat.events import RECEIVED, Event
from heartbeat.server.serial import Worker
from heartbeat.server.timers import periodic, start_timers, stop_timers
from heartbeat.text import json_bytes

__all__ = ["MAX_SOURCES", "RENDER_CHUNK", "JournalFile", "JournalService", "read_backwards"]

log = Logger()

# (timestamp, source_ip, source_port, raw JSON text or None, message dict or None, event or None)
Entry = tuple[float, str | None, int | None, bytes | None, dict[str, Any] | None, Event | None]

_BLOCK = 64 * 1024


class _Clockface:
    """``datetime`` strings (as bytes), rendered once per second rather than once per line."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def __call__(self, ts: float) -> bytes:
        second = int(ts)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second)).encode()
        return self._text


_LINE: Final = b'{"timestamp":%.3f,"datetime":"%s",%s%s}\n'
"""A message's line: its time, ``datetime``, the sender's fields and its JSON text."""
RENDER_CHUNK: Final = 256
"""Entries :meth:`JournalFile.render` renders in one go (about 0.1 ms with the GIL)."""
MAX_SOURCES: Final = 4096
"""Senders whose ``source_ip``/``source_port`` text a journal keeps, made once each."""


class JournalFile:
    """The journal file and its numbered backups; used only on the worker thread."""

    def __init__(self, directory: Path, filename: str, max_size: int, max_backups: int) -> None:
        self.path = directory / filename
        self.max_size = max_size
        self.max_backups = max_backups
        self._clockface = _Clockface()
        self._sources: dict[tuple[str | None, int | None], bytes] = {}
        self._file: IO[bytes] | None = None
        self._size = 0
        self.lines_written = 0
        self.lines_lost = 0
        """Lines a failed write (a full disk, an I/O error) did not put on disk whole."""
        self.rotations = 0
        self.rotation_failures = 0
        self.torn_lines_closed = 0

    def open(self) -> None:
        """Open (creating the directory) for appending; a torn last line is closed off."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: a failed write leaves nothing behind to be flushed later.
        file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - held open between batches
        try:
            size = file.tell()
            if size:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
                if torn:
                    self._write_all(file, b"\n")
                    size += 1
                    self.torn_lines_closed += 1
                    log.warn("journal: {path} ended in a torn line (killed process or full "
                             "disk); closed it off, readers skip it", path=str(self.path))
        except BaseException:
            file.close()
            raise
        self._file, self._size = file, size

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    @staticmethod
    def _write_all(file: IO[bytes], data: bytes) -> None:
        """``data`` whole, or OSError carrying how much was written (``written``)."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += file.write(view[done:]) or 0
        except OSError as e:
            e.written = done  # type: ignore[attr-defined]
            raise

    def render(self, entries: list[Entry]) -> list[bytes]:
        """The lines of ``entries``: a message's text as received spliced in (one format a
        line; the sender's fields made once per sender, the ``datetime`` once a second),
        or the message re-encoded (text on several lines), or the event encoded.

        A run of RENDER_CHUNK entries that are all messages to splice (what a flush
        mostly holds) is rendered by C loops (``zip``, ``map``) with no Python per line:
        the GIL is held for a fifth of the time, in turns of about 0.1 ms."""
        lines: list[bytes] = []
        for start in range(0, len(entries), RENDER_CHUNK):
            chunk = entries[start:start + RENDER_CHUNK]
            lines += self._render_plain(chunk) or self._render_each(chunk)
        return lines

    def _render_plain(self, entries: list[Entry]) -> list[bytes]:
        """:meth:`render` of ``entries`` if each is a message whose text can be spliced,
        else nothing."""
        tss, ips, ports, raws, _, events = zip(*entries, strict=True)
        if events.count(None) != len(events) or None in raws:
            return []
        texts = b"".join(raws)  # None is not in it
        if b"\n" in texts or b"\r" in texts:
            return []
        seconds = list(map(int, tss))
        whens = {second: self._clockface(second) for second in set(seconds)}
        sources = list(map(self._sources.get, zip(ips, ports, strict=True)))
        if None in sources:
            sources = [self._source(ip, port) if source is None else source
                       for source, ip, port in zip(sources, ips, ports, strict=True)]
        return list(map(_LINE.__mod__, zip(tss, map(whens.__getitem__, seconds), sources,
                                           raws, strict=True)))

    def _render_each(self, entries: list[Entry]) -> list[bytes]:
        lines: list[bytes] = []
        append = lines.append
        clockface, sources = self._clockface, self._sources
        second, when = math.nan, b""  # the second ``when`` is for (none yet)
        for ts, ip, port, raw, message, event in entries:
            if not second <= ts < second + 1:
                when = clockface(ts)
                second = float(int(ts)) if ts >= 0 else math.nan
            if event is not None:
                append(b'{"timestamp":%.3f,"datetime":"%s","event":%s}\n' % (
                    ts, when, json_bytes(event.to_json())))
                continue
            text = raw if raw is not None and 10 not in raw and 13 not in raw \
                else json_bytes(message)
            source = sources.get((ip, port))
            if source is None:
                source = self._source(ip, port)
            append(_LINE % (ts, when, source, text))
        return lines

    def _source(self, ip: str | None, port: int | None) -> bytes:
        """``"source_ip":...,"source_port":...,"message":`` of one sender, kept for the
        next lines (at most MAX_SOURCES senders; then begun again)."""
        if len(self._sources) >= MAX_SOURCES:
            self._sources.clear()
        source = self._sources[ip, port] = (b'"source_ip":' + json_bytes(ip)
                                            + b',"source_port":' + json_bytes(port)
                                            + b',"message":')
        return source

    def write(self, entries: list[Entry]) -> None:
        """Append ``entries``, rotating between lines whenever the next would pass max_size.

        If the file cannot be written, the lines not on disk whole are counted in
        ``lines_lost`` and the error raised; the file is opened again for the next
        batch, which first closes off a line the failure left torn.
        """
        written = 0
        try:
            if self._file is None:
                self.open()
            lines = self.render(entries)
            size = sum(map(len, lines))
            if self._size + size <= self.max_size:  # no rotation in this batch
                self._append(lines, size)
                written += len(lines)
                return
            chunk: list[bytes] = []
            chunk_size = 0
            for line in lines:
                if self._size + chunk_size + len(line) > self.max_size and self._size + chunk_size:
                    self._append(chunk, chunk_size)
                    written += len(chunk)
                    chunk, chunk_size = [], 0
                    self._rotate()
                chunk.append(line)
                chunk_size += len(line)
            self._append(chunk, chunk_size)
            written += len(chunk)
        except BaseException as e:
            written += getattr(e, "lines", 0)
            self.lines_lost += len(entries) - written
            self.close()
            raise
        finally:
            self.lines_written += written

    def _append(self, chunk: list[bytes], size: int) -> None:
        assert self._file is not None
        data = b"".join(chunk)
        try:
            self._write_all(self._file, data)
        except OSError as e:
            done = getattr(e, "written", 0)
            e.lines = data[:done].count(b"\n")  # type: ignore[attr-defined]
            self._size += done
            raise
        self._size += size

    def _rotate(self) -> None:
        """The file becomes backup 1 (older ones move up) and a new file is begun. If the
        renaming fails, writing goes on in the same file (opened again), and the next
        line past max_size tries again."""
        self.close()
        try:
            if self.max_backups == 0:
                self.path.unlink(missing_ok=True)
            else:
                for n in range(self.max_backups - 1, 0, -1):
                    older = self.backup(n)
                    if older.exists():
                        older.replace(self.backup(n + 1))
                self.path.replace(self.backup(1))
            self.rotations += 1
        except OSError as e:
            self.rotation_failures += 1
            log.error("journal: rotating {path} failed ({error}); writing on, and trying "
                      "again after another max_size", path=str(self.path), error=e)
            self.open()
            self._size = 0
            return
        self.open()

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


MAX_SCAN = 64 * 1024 * 1024
"""Bytes of journal one read of recent messages looks through at most."""


class JournalService(Service):
    """Buffers entries on the reactor thread; writes them on the journal's worker.

    If the disk falls behind (a stalled file system), at most ``max_pending``
    entries wait for the worker; batches beyond that are dropped and counted
    (``dropped``) rather than held in memory without limit. Reads of recent
    messages run on their own ``reader`` thread, never the writer's, and look
    through at most ``max_scan`` bytes each.
    """

    name = "journal"

    def __init__(
        self, journal: JournalFile, worker: Worker, clock: IReactorTime,
        flush_interval: float = 0.5, max_buffer: int = 20000, *,
        max_pending: int = 200_000, reader: Worker | None = None, max_scan: int = MAX_SCAN,
    ) -> None:
        self.journal = journal
        self._worker = worker
        self._reader = reader
        self.max_scan = max_scan
        self._clock = clock
        self._flush_interval = flush_interval
        self._max_buffer = max_buffer
        self._max_pending = max_pending
        self._buffer: list[Entry] = []
        self._pending = 0
        self._timers = [periodic("journal flush", flush_interval, self.flush, clock)]
        self.write_failures = 0
        self.dropped = 0

    def to_json(self) -> dict[str, Any]:
        file = self.journal
        return {"lines": file.lines_written, "rotations": file.rotations,
                "rotation_failures": file.rotation_failures, "write_failures": self.write_failures,
                "lost": file.lines_lost, "torn_lines_closed": file.torn_lines_closed,
                "dropped": self.dropped, "queued": self.queued}

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
            spliceable = raw is not None and 10 not in raw and 13 not in raw  # no LF, no CR
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
    ) -> Deferred[tuple[list[dict[str, Any]], bool]]:
        """The newest ``limit`` journaled messages, newest first, and whether the search
        was complete (False: ``max_scan`` bytes were read first).

        ``host`` picks one host's; ``hosts`` keeps only those hosts' (a viewer's);
        ``types`` only messages of those IDs (``MSG``, ``BOOT``...). Lines accepted
        before the call are written first; the read runs on the reader thread.
        """
        written = self.flush()
        reader = self._reader
        if reader is None:
            return self._worker.run(self._read_recent, limit, host, hosts, types)
        return written.addBoth(
            lambda _: reader.run(self._read_recent, limit, host, hosts, types))

    def _read_recent(
        self, limit: int, host: str | None, hosts: frozenset[str] | None = None,
        types: frozenset[str] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """On the reader thread, while the writer goes on: read again (at most twice more)
        if the files were rotated meanwhile, so no file is read twice under two names."""
        for _ in range(3):
            rotations = self.journal.rotations
            found = self._search(limit, host, hosts, types)
            if self.journal.rotations == rotations:
                break
        return found

    def _search(
        self, limit: int, host: str | None, hosts: frozenset[str] | None,
        types: frozenset[str] | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        found: list[dict[str, Any]] = []
        budget = self.max_scan
        # Cheap pre-filters on the raw line, each a superset of what it stands for.
        needle = None if host is None else json_bytes(host)
        kinds = None if types is None else [json_bytes(t) for t in types]
        for path in self.journal.files_newest_first():
            try:
                lines = read_backwards(path)
                for line in lines:
                    budget -= len(line) + 1
                    if budget < 0:
                        return found, False
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
                        return found, True
            except FileNotFoundError:
                continue  # rotated away while reading
        return found, True

    def startService(self) -> None:
        super().startService()
        self._worker.start()
        if self._reader is not None:
            self._reader.start()
        self._worker.run(self.journal.open).addErrback(
            lambda f: log.failure("journal: cannot open {path}", f, path=str(self.journal.path)))
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        """The last flush (after one in progress), then the file and the thread."""
        super().stopService()
        d = stop_timers(self._timers)
        d.addBoth(lambda _: self.flush())
        d.addBoth(lambda _: self._worker.run(self.journal.close))
        if self._reader is not None:
            reader = self._reader
            d.addBoth(lambda _: reader.stop())
        d.addBoth(lambda _: self._worker.stop())  # after the close: the thread is idle
        return d
