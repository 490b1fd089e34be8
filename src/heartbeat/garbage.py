"""Pausing CPython's cyclic garbage collector while a process builds what it keeps.

Reading a config, restoring hosts and their histories make objects by the
million, none of them garbage; the collector, run every 700 allocations and
walking more of them each time, cost a fifth to four fifths of that work (a
fleet's ``hosts:`` section: 13.5 s of composing with it, 2.7 s without). Once the
server runs, its own collector (heartbeat.server.collector) takes over.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside; the collector left as it was found (nested
    pauses included), however the block ends."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
