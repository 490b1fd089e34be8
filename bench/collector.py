"""The garbage collector's share of a datagram, in process: automatic or after the flush.

    .venv/bin/python bench/collector.py [--kinds plg,htb] [--per 2000] [--rounds 14]

Runs the whole server tree in process (tests/memserver.py, as bench/hotpath.py
``--server``), 1,000 hosts known, then ``--rounds`` rounds of ``--per``
datagrams each followed by half a second of the memory reactor (the store's
flush, run inline, and what follows it). Twice, each in a fresh process: with
``CollectorService`` collecting after each flush, as the server runs, and with
Python's automatic collections put back (every 700 allocations). Prints the
microseconds a datagram of the datagrams' path and of the flush with its
collection (docs/PERFORMANCE.md, issue 16).
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ingest import HOSTS, payloads  # noqa: E402
from tests.memserver import InProcessServer  # noqa: E402


def measure(kind: str, mode: str, per: int, rounds: int) -> str:
    data = payloads(kind)
    addrs = [(f"10.0.{n // 250}.{n % 250 + 1}", 40000 + n) for n in range(HOSTS)]
    with tempfile.TemporaryDirectory() as tmp:
        server = InProcessServer(Path(tmp), source_rate=1e9, ws_port=None)
        collector = server.parts.collector
        receive = server.udp.datagramReceived
        for n in range(HOSTS):
            receive(data[n], addrs[n])
        server.reactor.advance(1.0)
        gc.collect()
        gc.freeze()
        if mode == "automatic" and collector is not None:
            collector.stopService()  # the automatic collections back, as without it
        path = flush = 0.0
        for _ in range(rounds):
            began = time.perf_counter()
            for n in range(per):
                receive(data[n % HOSTS], addrs[n % HOSTS])
            path += time.perf_counter() - began
            began = time.perf_counter()
            server.reactor.advance(0.5)
            flush += time.perf_counter() - began
        server.stop()
    count = per * rounds
    return (f"{kind.upper()} {mode:>11}: the path {path / count * 1e6:6.2f} us a datagram, "
            f"the flush and collection {flush / count * 1e6:6.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="plg,htb")
    parser.add_argument("--per", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--mode", choices=("automatic", "after-flush"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.per < 1 or args.rounds < 1:
        parser.error("--per and --rounds must be at least 1")
    kinds = args.kinds.split(",")
    if args.mode is not None:
        for kind in kinds:
            print(measure(kind, args.mode, args.per, args.rounds), flush=True)
        return
    for kind in kinds:
        for mode in ("automatic", "after-flush"):
            subprocess.run([sys.executable, __file__, "--kinds", kind, "--per", str(args.per),
                            "--rounds", str(args.rounds), "--mode", mode], check=True)


if __name__ == "__main__":
    main()
