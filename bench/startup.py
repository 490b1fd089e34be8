"""CPU seconds of the store's part of start-up, on a state a bench/scale.py run kept.

    .venv/bin/python bench/startup.py DIR/state/heartbeat.sqlite3

Opens the store as the server does (``quick_check`` first unless the file was
stopped cleanly, the schema upgrade), loads
every host (``load_hosts``) and restores them into a registry, and prints the
process CPU time of each step, the wall clock and the peak RSS. CPU time is
the figure a loaded machine disturbs least (the wall clock of bench/scale.py's
restarts grows with the load average). Work on a copy: the open upgrades the
file to this code's schema.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

t0, w0 = time.process_time(), time.perf_counter()
from heartbeat.server.registry import Registry  # noqa: E402 - the import is timed
from heartbeat.server.store import load_hosts, open_sqlite  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a copy of a kept heartbeat.sqlite3")
    args = parser.parse_args()
    if not args.store.is_file():  # opening would make an empty store: 0 hosts, no error
        parser.error(f"{args.store}: no such file")
    t1 = time.process_time()
    backend = open_sqlite(args.store)
    t2 = time.process_time()
    hosts = backend.read(load_hosts)
    t3 = time.process_time()
    registry = Registry(grace=10, default_interval=30)
    registry.restore(hosts, time.time())
    t4 = time.process_time()
    backend.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(hosts):,} hosts: CPU import {t1 - t0:.2f} s, open {t2 - t1:.2f} s, "
          f"load_hosts {t3 - t2:.2f} s, restore {t4 - t3:.2f} s; wall "
          f"{time.perf_counter() - w0:.2f} s; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
