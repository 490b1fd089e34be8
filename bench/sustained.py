"""Sustained load: 80 % of the measured ceiling for 60 s, zero loss, RSS flat.

    .venv/bin/python bench/sustained.py [--kinds htb,plg] [--seconds 60] [--fraction 0.8]

For each payload kind of bench/ingest.py (same payloads, same pinning: server
on CPU 0, this sender on CPU 1), this script starts the real ``twistd -n
heartbeat`` (journal and store on, 1,000 host names) and measures its ceiling
as bench/ingest.py does: the saturation rate (the sender blasting for
``--probe`` seconds), then the zero-loss rate (paced steps of +10 % from half
the saturation rate, ``--probe`` seconds each, until one loses a datagram or
lags). The zero-loss rate is the ceiling. It then sends ``--fraction`` of the
ceiling, paced, for ``--seconds``, samples the server's RSS once a second and
reports:

- sent, accepted (the server's ``ingest.accepted``), lost = sent - accepted;
- RSS after the warm-up (the first 10 s), at the end, and the largest;
- whether the journal holds every accepted message (lines across the files).

The figures go into docs/PERFORMANCE.md with the command that produced them.
Bounded: at most about ``2 * (22 * probe + seconds + 15)`` seconds for both kinds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import SENDER_CPU, Target, blast, payloads, settle, start_server, zero_loss_rate

WARM_UP = 10.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def status(target: Target) -> dict[str, Any]:
    url = f"http://127.0.0.1:{target.http_port}/api/0/status"
    with urllib.request.urlopen(url, timeout=10) as r:
        return dict(json.load(r))


def sustain(target: Target, data: list[bytes], rate: int, seconds: float) -> dict[str, Any]:
    """Send ``rate``/s for ``seconds`` (paced), sampling RSS each second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # ACKs are not read
    before, _ = settle(target)
    address = ("127.0.0.1", target.port)
    size = len(data)
    total = int(rate * seconds)
    samples: list[tuple[float, int]] = []
    start = time.perf_counter()
    next_sample = start
    n = 0
    while n < total:
        now = time.perf_counter()
        if now >= next_sample:
            samples.append((now - start, rss_kib(target.process.pid)))
            next_sample += 1.0
        due = min(int((now - start) * rate) + 1, total)
        while n < due:
            sock.sendto(data[n % size], address)
            n += 1
    sent_for = time.perf_counter() - start
    sock.close()
    after, _ = settle(target)
    samples.append((time.perf_counter() - start, rss_kib(target.process.pid)))
    warm = [kib for t, kib in samples if t >= WARM_UP]
    return {"rate": rate, "seconds": round(sent_for, 1), "sent": total,
            "accepted": after - before, "lost": total - (after - before),
            "rss_kib_after_warm_up": warm[0], "rss_kib_end": warm[-1],
            "rss_kib_max": max(warm), "rss_samples": [kib for _, kib in samples]}


def journal_messages(directory: Path) -> int:
    """Message lines (not event lines) across the journal files."""
    count = 0
    for path in (directory / "journal").glob("messages.journal*"):
        with open(path, "rb") as f:
            count += sum(1 for line in f if b',"source_ip":' in line)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="htb,plg")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument("--probe", type=float, default=5.0,
                        help="seconds of saturation to measure the ceiling")
    args = parser.parse_args()
    if args.seconds <= WARM_UP:
        parser.error(f"--seconds {args.seconds:g}: must be longer than the {WARM_UP:g} s warm-up "
                     "(its end is the RSS the rest is compared with)")
    os.sched_setaffinity(0, {SENDER_CPU})
    results = {}
    for kind in args.kinds.split(","):
        data = payloads(kind)
        with tempfile.TemporaryDirectory() as tmp:
            # Journal files large and many enough to keep every line of the run.
            server = start_server(Path(tmp), journal_max_size=1 << 30, journal_max_backups=20)
            try:
                saturation = blast(server, data, args.probe).rate
                print(f"{kind.upper()}: saturation {saturation:,.0f}/s", flush=True)
                ceiling = zero_loss_rate(server, data, int(saturation / 2), args.probe)
                rate = int(ceiling * args.fraction)
                print(f"  ceiling (zero loss for {args.probe:.0f} s) {ceiling:,}/s; sustaining "
                      f"{rate:,}/s ({args.fraction:.0%}) for {args.seconds:.0f} s", flush=True)
                accepted_before = status(server)["ingest"]["accepted"]
                result = sustain(server, data, rate, args.seconds)
                body = status(server)
                server.stop()
                lines = journal_messages(Path(tmp))
            finally:
                if server.process.poll() is None:
                    server.stop()
        result.update(saturation=round(saturation), ceiling=ceiling, journal_lines=lines,
                      accepted_total=body["ingest"]["accepted"],
                      dropped=body["ingest"]["dropped"])
        flat = result["rss_kib_end"] - result["rss_kib_after_warm_up"]
        print(f"  sent {result['sent']:,}, accepted {result['accepted']:,}, "
              f"lost {result['lost']:,}; RSS {result['rss_kib_after_warm_up'] / 1024:.1f} MiB "
              f"after {WARM_UP:.0f} s -> {result['rss_kib_end'] / 1024:.1f} MiB at the end "
              f"({flat / 1024:+.1f} MiB), max {result['rss_kib_max'] / 1024:.1f} MiB; journal: "
              f"{lines:,} message lines for {body['ingest']['accepted']:,} accepted in all "
              f"({accepted_before:,} while probing)", flush=True)
        every_10 = result["rss_samples"][::10]
        print("  RSS every 10 s (MiB): " + ", ".join(f"{kib / 1024:.1f}" for kib in every_10),
              flush=True)
        results[kind] = result
    print(json.dumps({k: {x: y for x, y in v.items() if x != "rss_samples"}
                      for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
