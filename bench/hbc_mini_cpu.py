"""CPU cost of scripts/hbc_mini.py: run it against a loopback responder and read its CPU time.

    .venv/bin/python bench/hbc_mini_cpu.py --seconds 60 --interval 1 --plugin-interval 10

The client runs with every default plugin; a thread here answers each HTB with an
ACK. The client's user+system CPU time comes from /proc/PID/stat at the end, so
start-up (imports, first plugin round) is included. The cost at the defaults
(HTB every 30 s, plugins every 300 s) is extrapolated from the per-heartbeat and
per-round costs of two runs: heartbeats only, then heartbeats and plugins.
Bounded in time; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hbc_mini.py"
PLUGINS = ("os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor")


def responder(sock: socket.socket, stop: threading.Event, counts: dict[str, int]) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        message = json.loads(data if data[:1] == b"{" else zlib.decompress(data))
        counts[message["ID"]] = counts.get(message["ID"], 0) + 1
        if message["ID"] == "HTB":
            sock.sendto(json.dumps({"ID": "ACK", "seq": message["seq"], "ts": message["ts"],
                                    "server_ts": time.time()}).encode(), addr)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(seconds: float, interval: float, plugin_interval: float | None) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    counts: dict[str, int] = {}
    thread = threading.Thread(target=responder, args=(sock, stop, counts), daemon=True)
    thread.start()
    plugins = {name: ({"interval": plugin_interval} if plugin_interval else {"enabled": False})
               for name in PLUGINS}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"hb_port": sock.getsockname()[1], "interval": interval, "name": "bench",
                   "plugins": plugins}, f)
    process = subprocess.Popen([sys.executable, "-I", str(SCRIPT), "-c", f.name, "127.0.0.1"])
    try:
        time.sleep(seconds)
        used = cpu_seconds(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        stop.set()
        thread.join()
        sock.close()
        os.unlink(f.name)
    return {"cpu_s": used, "htb": counts.get("HTB", 0), "plg": counts.get("PLG", 0),
            "rounds": seconds / plugin_interval if plugin_interval else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--plugin-interval", type=float, default=10.0)
    args = parser.parse_args()
    bare = run(args.seconds, args.interval, None)
    full = run(args.seconds, args.interval, args.plugin_interval)
    per_htb = bare["cpu_s"] / max(bare["htb"], 1)
    per_round = max(0.0, full["cpu_s"] - bare["cpu_s"]) / max(full["rounds"], 1)
    default_share = (per_htb / 30.0 + per_round / 300.0) * 100.0
    print(f"heartbeats only: {bare['cpu_s']:.2f} s CPU for {bare['htb']} HTB in "
          f"{args.seconds:g} s ({bare['cpu_s'] / args.seconds * 100:.2f} % of a core)")
    print(f"with plugins:    {full['cpu_s']:.2f} s CPU, {full['htb']} HTB, {full['plg']} PLG, "
          f"{full['rounds']:g} rounds ({full['cpu_s'] / args.seconds * 100:.2f} % of a core)")
    print(f"per heartbeat {per_htb * 1000:.2f} ms, per plugin round {per_round * 1000:.1f} ms "
          f"(start-up included in both)")
    print(f"at the defaults (HTB every 30 s, plugins every 300 s): "
          f"{default_share:.4f} % of one core")


if __name__ == "__main__":
    main()
