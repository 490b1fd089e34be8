"""Dynamic DNS at fleet size: N new hosts against BIND's named, until every record is set.

    .venv/bin/python bench/dns.py [--hosts 1000] [--zones 1]

Starts BIND's ``named`` on loopback with one dynamic zone (``--zones`` zones) and a
TSIG key (tests/bind.py, as the suite's DNS tests do) and the real ``twistd -n
heartbeat`` with ``dyndomains`` naming it, sends one heartbeat for each of
``--hosts`` new hosts, and prints how long the server took until ``/api/0/status``
counted every record updated, the updates a second, and how many nsupdate runs it
took (``dns.runs``, where the server reports it). Then it asks named for a sample
of the names with dig. Everything is on loopback, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bind import NSUPDATE, NamedServer  # noqa: E402
from tests.support import ServerProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up after this many seconds")
    args = parser.parse_args()
    if args.hosts < 1:
        parser.error("--hosts must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        named = NamedServer(Path(tmp) / "named").start()
        (Path(tmp) / "server").mkdir()
        server = ServerProcess(
            Path(tmp) / "server", dyndomains=[named.zone], nsupdate_bin=NSUPDATE,
            nsupdate_key=str(named.key), nsupdate_server=f"127.0.0.1 {named.port}",
            source_rate=1e9, max_hosts=10**7, max_unconfigured_hosts=10**7).start()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            start = time.monotonic()
            for _ in range(5):  # again until the server holds every host (kernel drops)
                for n in range(args.hosts):
                    sock.sendto(json.dumps({"ID": "HTB", "name": f"host{n:06d}",
                                            "interval": 3600}).encode(),
                                ("127.0.0.1", server.udp_port))
                    if n % 200 == 199:
                        time.sleep(0.01)
                if server.get("/api/0/status")["hosts"]["total"] == args.hosts:
                    break
                time.sleep(1.0)
            sock.close()
            print(f"  the server holds {server.get('/api/0/status')['hosts']['total']:,} hosts "
                  f"after {time.monotonic() - start:.1f} s", flush=True)
            dns: dict[str, Any] = {}
            told = start
            while time.monotonic() - start < args.timeout:
                dns = server.get("/api/0/status")["dns"]
                if dns["updated"] + dns["gave_up"] >= args.hosts:
                    break
                if time.monotonic() - told >= 10:
                    told = time.monotonic()
                    print(f"  {told - start:.0f} s: {dns['updated']:,} updated, "
                          f"{dns['queued']:,} queued, {dns['runs']} runs", flush=True)
                time.sleep(0.2)
            took = time.monotonic() - start
            print(f"dns: {args.hosts:,} new hosts, {dns['updated']:,} records updated in "
                  f"{took:.1f} s ({dns['updated'] / took:,.0f}/s); gave up {dns['gave_up']}, "
                  f"nsupdate runs {dns.get('runs', 'not counted')}")
            sample = [f"host{n:06d}.{named.zone}" for n in
                      sorted({0, args.hosts // 2, args.hosts - 1})]
            print("  dig:", {name: named.query(name, "A") for name in sample})
        finally:
            server.stop()
            named.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
