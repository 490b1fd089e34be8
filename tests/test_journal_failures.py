"""The journal when its disk fails: a full file system, a directory gone for a moment.

Lines a failed write loses are counted; a line torn by a full disk never
swallows the next one written; a failed rotation leaves the journal writing.
The full disk is real: a small tmpfs filled to the last byte (needs root).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from heartbeat.server.journal import JournalFile, JournalService
from heartbeat.server.serial import ImmediateWorker
from tests.support import fill_disk, small_tmpfs


def _entries(first: int, count: int, pad: int = 60) -> list[Any]:
    out = []
    for n in range(first, first + count):
        message = {"ID": "MSG", "name": "h", "n": n, "text": "x" * pad}
        out.append((1.0 + n, "10.0.0.1", 5000, json.dumps(message).encode(), message, None))
    return out


def _numbers(directory: Path, name: str = "j") -> list[int]:
    """The n of every whole line, oldest file first (torn lines skipped, as readers do)."""
    found = []
    files = sorted(directory.glob(f"{name}*"), key=lambda p: -int(p.suffix[1:] or 0)
                   if p.suffix[1:].isdigit() else 0)
    for path in files:
        for line in path.read_bytes().splitlines():
            try:
                found.append(json.loads(line)["message"]["n"])
            except ValueError:
                continue
    return found


def test_a_failed_rotation_leaves_the_journal_writing(tmp_path: Path) -> None:
    """The directory gone while a rotation renames: logged and counted, and the next
    lines go to a file opened again (they used to fail until a restart)."""
    directory = tmp_path / "journal"
    journal = JournalFile(directory, "j", 2000, 3)
    service = JournalService(journal, ImmediateWorker(), Clock())
    journal.write(_entries(0, 10))
    shutil.rmtree(directory)
    journal.write(_entries(10, 40))  # passes max_size: a rotation, which cannot rename
    assert (journal.rotation_failures, journal.lines_lost) == (1, 0)
    journal.write(_entries(50, 10))
    assert _numbers(directory)[-10:] == list(range(50, 60))
    journal.write(_entries(60, 40))  # the directory is back: rotations work again
    assert journal.rotations >= 1
    assert _numbers(directory)[-1] == 99
    assert service.to_json()["rotation_failures"] == 1
    journal.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "1m") as where:
        yield where


def test_a_full_disk_counts_lost_lines_and_tears_no_later_line(small_disk: Path) -> None:
    journal = JournalFile(small_disk, "j", 10_000_000, 1)
    service = JournalService(journal, ImmediateWorker(), Clock())
    journal.write(_entries(0, 1))  # the file's last page has room for part of a batch
    filler = fill_disk(small_disk)
    with pytest.raises(OSError, match="No space left"):
        journal.write(_entries(1, 100))
    written_whole = len(_numbers(small_disk)) - 1
    assert 0 < written_whole < 100  # part of the batch fit, then a line was torn
    assert not (small_disk / "j").read_bytes().endswith(b"\n")
    assert (journal.lines_written, journal.lines_lost) == (1 + written_whole, 100 - written_whole)
    filler.unlink()
    journal.write(_entries(101, 5))
    assert _numbers(small_disk) == [*range(written_whole + 1), *range(101, 106)]
    assert journal.torn_lines_closed == 1
    assert service.to_json()["lost"] == 100 - written_whole
    journal.close()


def test_a_read_of_recent_messages_is_bounded_and_off_the_writer(tmp_path: Path) -> None:
    """A search that finds nothing stops after max_scan bytes (and says so), on the
    reader's thread: the writer's thread is never asked to read."""
    journal = JournalFile(tmp_path, "j", 100_000, 3)
    writer, reader = CountingWorker(), CountingWorker()
    service = JournalService(journal, writer, Clock(), reader=reader, max_scan=50_000)
    journal.write(_entries(0, 2000))  # about 330 KB over four files
    assert journal.rotations >= 3
    got: list[Any] = []
    service.recent(10, hosts=frozenset({"nobody"})).addCallback(got.append)
    assert got == [([], False)]
    assert ("_read_recent" in writer.ran, reader.ran) == (False, ["_read_recent"])
    service.recent(3).addCallback(got.append)
    assert [e["message"]["n"] for e in got[1][0]] == [1999, 1998, 1997] and got[1][1]
    journal.close()


class CountingWorker(ImmediateWorker):
    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.ran.append(getattr(fn, "__name__", "?"))
        return super().run(fn, *args, **kwargs)
