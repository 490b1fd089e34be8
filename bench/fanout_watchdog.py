"""A stall watchdog inside the server's process, for ``bench/fanout.py --watchdog``.

Loaded by a ``sitecustomize`` the bench puts first on the server's ``PYTHONPATH``
(nothing of the project imports it). It wraps the epoll reactor's poller
so that it knows when the reactor is working (between two polls) and when it
waits for I/O, and it runs one thread that looks every 3 ms:

- a **stall** is a reactor turn (from a poll's return to the next poll) longer
  than ``HB_WATCHDOG_MS`` (12 ms): each is counted with its length, and the
  first time the watchdog sees one in progress it notes the stack of every
  other thread (what ran while the reactor waited: the watchdog too needs the
  GIL, so it looks when some thread lets go of it) and the reactor's own;
- every **garbage collection** is timed (``gc.callbacks``), by generation;
- every reactor turn's length (percentiles), and each thread's CPU time and time
  spent runnable but waiting for a CPU (``/proc/self/task/*/schedstat``) at the end.

At exit (twistd stops on SIGTERM) it writes what it found, as JSON, to
``HB_WATCHDOG_OUT``; ``bench/fanout.py`` prints a summary.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

THRESHOLD = float(os.environ.get("HB_WATCHDOG_MS", "12")) / 1000
OUT = os.environ.get("HB_WATCHDOG_OUT")


class _State:
    def __init__(self) -> None:
        self.busy_since: float | None = None
        """perf_counter when the reactor's current turn began (None: in a poll)."""
        self.turn = 0
        self.reactor_thread: int | None = None
        self.turns: list[float] = []
        """Lengths of the turns over the threshold."""
        self.turn_count = 0
        self.stall_at: list[tuple[float, float]] = []
        """(s since start, ms) of each stall."""
        self.all_turns: list[float] = []
        self.stacks: list[dict[str, Any]] = []
        self.gc: list[tuple[int, float]] = []
        self._gc_start = 0.0
        self.reported = False
        self.started = time.perf_counter()
        self.full: list[tuple[float, float, int, int]] = []
        """Full collections: (s since start, ms, objects collected, objects frozen)."""


STATE = _State()


def _where(frame: Any, depth: int = 6) -> list[str]:
    return [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
            for f in traceback.extract_stack(frame)[-depth:]][::-1]


def _watch() -> None:
    noted = -1
    while True:
        time.sleep(0.003)
        since, turn = STATE.busy_since, STATE.turn
        if since is None or turn == noted or time.perf_counter() - since < THRESHOLD:
            continue
        noted = turn
        frames = sys._current_frames()
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        STATE.stacks.append({
            "after_ms": round((time.perf_counter() - since) * 1000, 1),
            "threads": {names.get(ident, str(ident)) + (" (reactor)" if ident ==
                                                       STATE.reactor_thread else ""):
                        _where(frame) for ident, frame in frames.items() if ident != me},
        })


def _quantile(values: list[float], f: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * f))] if ordered else 0.0


def _gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        STATE._gc_start = time.perf_counter()
    else:
        STATE.gc.append((info["generation"], time.perf_counter() - STATE._gc_start))
        if info["generation"] == 2:
            STATE.full.append((round(time.perf_counter() - STATE.started, 2),
                               round((time.perf_counter() - STATE._gc_start) * 1000, 1),
                               info["collected"], gc.get_freeze_count()))


def _threads_cpu() -> dict[str, list[float]]:
    """Each thread's CPU seconds and seconds waiting for a CPU while runnable (schedstat)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    found: dict[str, list[float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            ran, waited, _ = (task / "schedstat").read_text().split()
        except OSError:
            continue
        name = names.get(int(task.name), task.name)
        found[name] = [int(ran) / 1e9, int(waited) / 1e9]
    return found


def _report() -> None:
    if OUT is None or STATE.reported:
        return
    STATE.reported = True
    turns = sorted(STATE.turns)
    tops: Counter[str] = Counter()
    reactor: Counter[str] = Counter()
    for stall in STATE.stacks:
        for name, stack in stall["threads"].items():
            if "(reactor)" in name:
                reactor[" < ".join(stack[:3])] += 1
                continue
            if not stack:
                continue
            if any(s.endswith((" wait", " _wait", " get", " sleep", " select", " poll"))
                   for s in stack[:1]):
                continue  # idle (a worker waiting for work)
            tops[f"{name.split('-')[0] if name[0].isdigit() else name}: {stack[0]}"] += 1
    gcs = sorted(STATE.gc, key=lambda g: -g[1])
    Path(OUT).write_text(json.dumps({
        "threshold_ms": THRESHOLD * 1000, "turns": STATE.turn_count,
        "stalls": len(turns),
        "turn_ms": {q: round(_quantile(STATE.all_turns, f) * 1000, 2)
                    for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "busy_s": round(sum(STATE.all_turns), 2), "stall_ms": [round(t * 1000, 1) for t in turns],
        "busy_threads_at_stalls": tops.most_common(20),
        "reactor_at_stalls": reactor.most_common(20),
        "stacks": STATE.stacks[:200],
        "gc": {str(gen): {"count": sum(1 for g, _ in STATE.gc if g == gen),
                          "max_ms": round(max((d for g, d in STATE.gc if g == gen),
                                              default=0) * 1000, 2),
                          "total_ms": round(sum(d for g, d in STATE.gc if g == gen) * 1000, 1)}
               for gen in (0, 1, 2)},
        "full_collections": STATE.full,
        "stall_at": STATE.stall_at,
        "gc_longest_ms": [(g, round(d * 1000, 2)) for g, d in gcs[:10]],
        "thread_cpu_s": _threads_cpu(),
    }, indent=1))


class _Poller:
    """The reactor's epoll object, noting when the reactor goes to wait and comes back:
    what a turn does (timed calls, then the I/O the poll found) is between two polls."""

    def __init__(self, poller: Any) -> None:
        self._poller = poller

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)

    def poll(self, *args: Any) -> Any:
        since = STATE.busy_since
        if since is not None:
            length = time.perf_counter() - since
            STATE.turn_count += 1
            STATE.all_turns.append(length)
            if length > THRESHOLD:
                STATE.turns.append(length)
                STATE.stall_at.append((round(since - STATE.started, 3), round(length * 1000, 1)))
        STATE.busy_since = None
        try:
            return self._poller.poll(*args)
        finally:
            STATE.turn += 1
            STATE.busy_since = time.perf_counter()


def install() -> None:
    from twisted.internet import epollreactor

    iteration = epollreactor.EPollReactor.doIteration  # doPoll's other name, run() calls it

    def doIteration(self: Any, timeout: float | None) -> None:
        if STATE.reactor_thread is None:  # the first poll: the reactor runs
            STATE.reactor_thread = threading.get_ident()
            self._poller = _Poller(self._poller)
            # Before the shutdown, while the store's and the journal's threads still run.
            self.addSystemEventTrigger("before", "shutdown", _report)
        iteration(self, timeout)

    epollreactor.EPollReactor.doIteration = doIteration  # type: ignore[method-assign]
    gc.callbacks.append(_gc)
    threading.Thread(target=_watch, name="hb-watchdog", daemon=True).start()
    atexit.register(_report)  # twistd may leave without it: also at the reactor's stop
