"""Micro-benchmark: one ~1.5 KB PLG sample evaluated against 50 threshold rules.

    .venv/bin/python bench/thresholds.py [--repeat 7] [--number 20000]
    .venv/bin/python bench/thresholds.py --untimed {steady,hot,built-in} N

Prints the sample size, the rule count and the time per evaluation (best and
median of the repeats) for the steady state (no transition: the common case),
for a sample where a few metrics are not OK (rendering templates), and for the
same sample with only the built-in rules (a server without `thresholds:`).
Target: well under 100 microseconds per evaluation.

``--untimed CASE N`` only runs N evaluations of one case, for an instruction
counter (``valgrind --tool=cachegrind --cache-sim=no``): the difference between
N and 0 over N is the instructions of one evaluation, a figure a busy machine
does not disturb (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from typing import Any

from heartbeat.config.server import ServerConfig
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.thresholds.rules import Rule, Tree


def sample(hot: bool = False) -> dict[str, Any]:
    """The plugin data of one PLG from a busy server (cpu, memory, disks, ZFS, Nagios)."""
    partitions = {
        mount: {"percent": 41.5, "free_gb": 118.2, "total_gb": 220.0, "used_gb": 101.8,
                "fstype": "ext4"}
        for mount in ("/", "/var", "/home", "/var/lib/postgresql")
    }
    if hot:
        partitions["/var"]["percent"] = 93.0
    return {
        "cpu_monitor": {"cpu_percent": 97.5 if hot else 12.5, "load_1min": 0.31,
                        "load_5min": 0.42, "load_15min": 0.4, "process_count": 212,
                        "uptime": 1234567, "cpu_count": 8, "freq_mhz": 2400.0},
        "memory_monitor": {"percent": 61.2, "available_mb": 6123.4, "total_mb": 15872.0,
                           "swap_percent": 3.1, "swap_total_mb": 2048.0},
        "disk_monitor": {"partitions": partitions},
        "zfs_monitor": {"pools": {
            "tank": {"health": "DEGRADED" if hot else "ONLINE", "capacity": 45,
                     "fragmentation": 12, "size": 3985729650688, "free": 2192151307878},
            "backup": {"health": "ONLINE", "health_ok": 1, "capacity": 61,
                       "fragmentation": 3, "size": 7971459301376, "free": 3108869127537},
        }},
        "nagios_runner": {
            "check_load_status_code": 0, "check_load_status": "OK",
            "check_load_output": "OK - load average: 0.31, 0.42, 0.40",
            "check_disk_root_status_code": 2 if hot else 0,
            "check_disk_root_status": "CRITICAL" if hot else "OK",
            "check_disk_root_output": "DISK OK - free space: / 118200 MB (53% inode=91%)",
            "check_http_status_code": 0, "check_http_status": "OK",
            "check_http_output": "HTTP OK: HTTP/1.1 200 OK - 612 bytes in 0.002 s",
        },
        "network_monitor": {"errors_total": 0, "dropped_total": 2, "connections": 143,
                            "bytes_sent": 98765432, "bytes_recv": 123456789},
    }


def thresholds() -> dict[str, Any]:
    """50 plugin rules with the built-in defaults (zfs health_ok/capacity, nagios), + 20 RTT."""
    rule = {"warning": 80, "critical": 90}
    low = {"warning": 10, "critical": 5, "operator": "<"}
    return {
        "cpu_monitor": {"cpu_percent": {**rule, "display": "(threshold: {op_symbol} "
                                                          "{threshold_value}%)"},
                        "load_1min": {"warning": 8, "critical": 16},
                        "load_5min": {"warning": 6, "critical": 12},
                        "load_15min": {"warning": 4, "critical": 8},
                        "process_count": {"warning": 800, "critical": 1500},
                        "cpu_count": {"operator": "<", "warning": 2},
                        "freq_mhz": {"operator": "<", "warning": 800},
                        "uptime": {"operator": "<", "warning": 600}},
        "memory_monitor": {"percent": rule, "swap_percent": {"warning": 50, "critical": 80,
                                                             "generic": False},
                           "available_mb": {"warning": 500, "critical": 200, "operator": "<"},
                           "total_mb": {"operator": "<", "warning": 4096},
                           "swap_total_mb": {"operator": "==", "warning": 0}},
        "disk_monitor": {"partitions": {
            "*": {"percent": rule, "free_gb": low},
            **{mount: {"percent": {"warning": 75, "critical": 88}, "used_gb": {"critical": 500},
                       "total_gb": {"operator": "==", "warning": 0},
                       "fstype": {"operator": "!=", "warning": "ext4"},
                       "free_gb": {"warning": 20, "critical": 10, "operator": "<"}}
               for mount in ("/", "/var", "/home", "/var/lib/postgresql")},
        }},
        "zfs_monitor": {"pools": {
            "*": {"fragmentation": {"warning": 50, "critical": 70},
                  "free": {"operator": "<", "warning": 10**11, "critical": 10**10},
                  "size": {"operator": "<", "warning": 10**9}},
            "tank": {"capacity": {"warning": 70, "critical": 85}},
            "backup": {"fragmentation": {"warning": 30, "critical": 60}},
        }},
        "nagios_runner": {"check_http_status_code": {"operator": "nagios",
                                                     "display": "web: {output}"},
                          "check_load_status_code": {"operator": "nagios"}},
        "network_monitor": {"errors_total": {"warning": 10, "critical": 100},
                            "bytes_sent": {"warning": 10**12, "critical": 10**13},
                            "dropped_total": {"warning": 100, "critical": 1000},
                            "connections": {"warning": 5000, "critical": 10000},
                            "bytes_recv": {"warning": 10**12, "critical": 10**13}},
        "rtt": {f"host{i:02d}": {"warning": 100, "critical": 500} for i in range(20)},
    }


def count_rules(tree: Tree) -> int:
    """Configured rules on plugin data (a `*` rule counts once; RTT rules are not counted)."""
    return sum(1 if isinstance(v, Rule) else count_rules(v) for k, v in tree.items()
               if v is not None and k != "rtt")


def measure(engine: ThresholdEngine, plugins: dict[str, Any], repeat: int,
            number: int) -> list[float]:
    clock = iter(range(10**9))
    timer = timeit.Timer(lambda: engine.evaluate_plugins("web1", plugins, next(clock)))
    return [t / number * 1e6 for t in timer.repeat(repeat, number)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--untimed", nargs=2, metavar=("CASE", "N"),
                        help="run N evaluations of CASE (steady, hot, built-in) untimed")
    args = parser.parse_args(argv)
    book = RuleBook.from_config(ServerConfig(thresholds=thresholds()), "bench")
    quiet, hot = sample(), sample(hot=True)
    if args.untimed:
        case, count = args.untimed
        rules_book, plugins = {"steady": (book, quiet), "hot": (book, hot), "built-in": (
            RuleBook.from_config(ServerConfig(), "bench"), quiet)}[case]
        engine = ThresholdEngine(rules_book)
        engine.evaluate_plugins("web1", plugins, 0)
        for now in range(1, int(count) + 1):
            engine.evaluate_plugins("web1", plugins, now)
        return 0
    rules = count_rules(book.rules_for("web1").tree)
    size = len(json.dumps({"ID": "PLG", "name": "web1", "plugins": quiet},
                          separators=(",", ":")))
    print(f"sample: {size} bytes of PLG JSON; rules: {rules}; python {sys.version.split()[0]}")
    built_in = RuleBook.from_config(ServerConfig(), "bench")
    runs = (("steady (all OK)", book, quiet), ("5 metrics not OK", book, hot),
            (f"built-in rules ({count_rules(built_in.rules_for('web1').tree)})", built_in, quiet))
    for label, rules_book, plugins in runs:
        engine = ThresholdEngine(rules_book)
        engine.evaluate_plugins("web1", plugins, 0)  # enter the alert states once
        times = measure(engine, plugins, args.repeat, args.number)
        print(f"{label:>20}: best {min(times):6.1f} us, median {statistics.median(times):6.1f} us"
              f" per evaluation ({args.repeat} x {args.number})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
