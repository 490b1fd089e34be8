"""What a /metrics scrape costs at fleet size: the reactor-thread snapshot, then the rest.

    .venv/bin/python bench/metrics.py --hosts 1000 30000 100000

Each host has the plugin data the agent sends (cpu, memory, three partitions)
and rules naming five values of it; a tenth of the hosts are DOWN and one in
twenty has an active alert. Prints, per fleet size, the snapshot time (what
blocks the reactor), the time to build and encode the text exposition (on a
worker thread in the server) and its size.
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.defer import succeed

from heartbeat.config.server import ServerConfig
from heartbeat.server.metrics import MetricsExporter
from heartbeat.server.registry import HostState, Registry
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook

RULES = {
    "cpu_monitor": {"cpu_percent": {"warning": 80, "critical": 90}},
    "memory_monitor": {"percent": {"warning": 85, "critical": 95}},
    "disk_monitor": {"partitions": {"*": {"percent": {"warning": 80, "critical": 90}}}},
}


def plugins(i: int) -> dict:
    return {
        "cpu_monitor": {"cpu_percent": 12.5 + i % 80, "load_1min": 0.5, "per_cpu": [1, 2, 3]},
        "memory_monitor": {"percent": 40.0 + i % 60, "total": 16e9, "available": 8e9},
        "disk_monitor": {"partitions": {p: {"percent": 30 + i % 70, "free": 1e9, "total": 5e9}
                                        for p in ("/", "/var", "/home")}},
    }


def fleet(size: int) -> tuple[Registry, ThresholdEngine, dict[str, dict]]:
    """The registry, the engine and each host's latest plugin data (the store's part)."""
    registry = Registry(grace=40.0, default_interval=30.0)
    stored: dict[str, dict] = {}
    engine = ThresholdEngine(RuleBook.from_config(ServerConfig(thresholds=RULES), "bench"))
    now = 1_800_000_000.0
    for i in range(size):
        name = f"host{i:06d}"
        registry.apply({"ID": "HTB", "name": name, "rtt": 0.3 + i % 7}, ("192.0.2.1", 5000),
                       now)
        data = plugins(i)
        registry.apply({"ID": "PLG", "name": name, "plugins": data}, ("192.0.2.1", 5000), now)
        engine.evaluate_plugins(name, data, now)
        stored[name] = data
        if i % 10 == 0:
            registry.apply({"ID": "SHUT", "name": name}, ("192.0.2.1", 5000), now)
    return registry, engine, stored


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 30000, 100000])
    parser.add_argument("--max-series", type=int, default=1_000_000)
    args = parser.parse_args()
    for size in args.hosts:
        registry, engine, stored = fleet(size)
        exporter = MetricsExporter(
            registry, engine, {}, version="bench", started=0.0,
            states=[s.value for s in HostState], named_metrics=engine.named_values,
            run_in_thread=lambda fn, *a: succeed(fn(*a)),
            plugin_data=lambda stored=stored: succeed(stored), max_series=args.max_series)
        t0 = time.perf_counter()
        snapshot = exporter.snapshot(None, stored)
        t1 = time.perf_counter()
        body, _ = exporter.encode(snapshot, None)
        t2 = time.perf_counter()
        lines = body.count(b"\n")
        print(f"{size:>7} hosts: snapshot {1000 * (t1 - t0):7.1f} ms (reactor), "
              f"families + text {1000 * (t2 - t1):8.1f} ms (worker), "
              f"{len(body) / 1e6:6.1f} MB, {lines:>8} lines")


if __name__ == "__main__":
    main()
