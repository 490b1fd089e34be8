"""Micro-benchmark: what maintenance windows and silences cost the notifier and host objects.

    .venv/bin/python bench/operations.py [--hosts 10000] [--repeat 5]

A calendar of 100 recurring windows (one per rack glob, Europe/Berlin) plus one
open window by tag, and 100 silences of single hosts: the time of the notifier's
decision (``Suppression.decide``) per alert event, and the time of one host
object (``HostViews.json``, what ``GET /api/0/hosts`` and the feed's snapshot
make per host) without and with what covers the host (``annotations``). Best of
the repeats, per event or host (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import time

from heartbeat.events import ALERT, Event
from heartbeat.server.acks import AckBook
from heartbeat.server.maintenance import MaintenanceCalendar, parse_window
from heartbeat.server.registry import Registry
from heartbeat.server.silences import SilenceBook, parse_silence
from heartbeat.server.suppression import Suppression
from heartbeat.server.web.hostview import HostViews

T0 = 1_800_000_000.0


def books() -> Suppression:
    calendar = MaintenanceCalendar(
        tags_of=lambda host: frozenset({"linux"}) if host.endswith("7") else frozenset())
    for i in range(100):
        calendar.put(parse_window(
            {"hosts": [f"rack{i}-*"], "cron": "0 3 * * sun", "duration": "2h",
             "timezone": "Europe/Berlin"}, key="", source="bench", default_zone="UTC",
            window_id=str(i + 1)))
    calendar.put(parse_window({"tags": ["linux"], "start": T0 - 10, "duration": "1h"}, key="",
                              source="bench", default_zone="UTC", window_id="open"))
    silences = SilenceBook()
    for i in range(100):
        silences.put(parse_silence(
            {"host": f"db{i}", "metric": "disk_monitor.*", "duration": "2h", "comment": "x"},
            source="bench", default_zone="UTC", now=T0, silence_id=str(i + 1), author="bob"))
    return Suppression(calendar, silences, AckBook())


def best(repeat: int, run: object) -> float:
    assert callable(run)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.hosts
    registry = Registry(grace=10, default_interval=30)
    for i in range(n):
        registry.apply({"ID": "HTB", "name": f"web{i}"}, ("10.0.0.1", 1), T0)
    hosts = list(registry)
    events = [Event(ALERT, host.name, T0, {
        "metric_path": "cpu_monitor.cpu_percent", "level": "CRITICAL", "previous": "OK",
        "notify": True, "reminder": False, "cleared": False}) for host in hosts]

    def decide() -> None:
        suppression = books()  # fresh: the calendar's per-host answers are not yet known
        for event in events:
            suppression.decide(event, T0 + 1)

    suppression = books()
    plain = HostViews(registry)
    covered = HostViews(registry, None, lambda h, k: suppression.annotations(h, k, T0 + 1))
    base = best(args.repeat, books)  # making the books, left out of the decisions' time
    print(f"{n} hosts, {len(suppression.calendar)} windows, {len(suppression.silences)} "
          f"silences")
    print(f"decide, per alert event:            "
          f"{(best(args.repeat, decide) - base) * 1e6 / n:6.1f} us")
    for label, views in (("host object, plain:", plain), ("host object, with what covers it:",
                                                          covered)):
        seconds = best(args.repeat, lambda v=views: [v.json(h) for h in hosts])
        print(f"{label:35s} {seconds * 1e6 / n:6.1f} us")


if __name__ == "__main__":
    main()
