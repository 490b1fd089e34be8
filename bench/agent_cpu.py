"""Agent CPU cost: the real ``twistd -n heartbeat-agent`` against a loopback ACK sink.

    .venv/bin/python bench/agent_cpu.py [--seconds 60] [--speedup 10] [--client hbc_mini]

Runs the agent with every default plugin that works on this host (os_info,
cpu/memory/disk/network monitors, filesystem_info; zfs_monitor says once that it
has no zpool) and the default intervals divided by ``--speedup`` (heartbeat
30 s -> 3 s, plugins 300 s -> 30 s). After a warm-up it reads the agent's
user+system CPU time from /proc over ``--seconds`` of wall time, and reports

* the measured share of one core at the shortened intervals, and
* that figure scaled to the default intervals: CPU seconds / (seconds x speedup),
  i.e. ``--seconds x --speedup`` of simulated time at the defaults (60 x 10 =
  10 minutes). Per-cycle work dominates; idle reactor wake-ups are ~0.

A thread in this process answers every HTB with an ACK, as the server does, so
the RTT path runs too. ``--client hbc_mini`` measures ``python3 -I
scripts/hbc_mini.py`` instead, with its five default plugins. Bounded: one
client, loopback only, stops by itself.
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

import yaml

PYTHON = sys.executable
TWISTD = str(Path(PYTHON).with_name("twistd"))
DEFAULT_INTERVAL = 30.0
DEFAULT_PLUGIN_INTERVAL = 300.0
PLUGINS = ("os_info", "cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor",
           "filesystem_info", "zfs_monitor")
HBC_MINI = Path(__file__).resolve().parent.parent / "scripts" / "hbc_mini.py"
HBC_MINI_PLUGINS = PLUGINS[:5]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sink(sock: socket.socket, stop: threading.Event, counts: dict[str, int]) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--speedup", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--client", choices=("agent", "hbc_mini"), default="agent")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    counts: dict[str, int] = {}
    thread = threading.Thread(target=sink, args=(sock, stop, counts), daemon=True)
    thread.start()
    plugin_interval = DEFAULT_PLUGIN_INTERVAL / args.speedup
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"hb_port": sock.getsockname()[1], "name": "bench",
                    "interval": DEFAULT_INTERVAL / args.speedup}
        if args.client == "hbc_mini":
            config = Path(tmp) / "hbc.json"
            config.write_text(json.dumps({**settings, "plugins": {
                name: {"interval": plugin_interval} for name in HBC_MINI_PLUGINS}}))
            argv = [PYTHON, "-I", str(HBC_MINI), "-c", str(config), "127.0.0.1"]
        else:
            config = Path(tmp) / "agent.yaml"
            config.write_text(yaml.safe_dump({**settings, "plugins": {
                name: {"interval": plugin_interval} for name in PLUGINS}}))
            argv = [TWISTD, "--nodaemon", "--pidfile=", "heartbeat-agent", "-c", str(config),
                    "127.0.0.1"]
        agent = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            time.sleep(args.warmup)
            start_cpu, start = cpu_seconds(agent.pid), time.monotonic()
            time.sleep(args.seconds)
            used, elapsed = cpu_seconds(agent.pid) - start_cpu, time.monotonic() - start
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(20)
            stop.set()
            thread.join()
            sock.close()
    measured = used / elapsed * 100.0
    scaled = used / (elapsed * args.speedup) * 100.0
    print(f"{args.client} CPU: {used:.3f} s over {elapsed:.1f} s at intervals HTB "
          f"{DEFAULT_INTERVAL / args.speedup:g} s / plugins {plugin_interval:g} s "
          f"= {measured:.3f} % of one core")
    print(f"scaled to the defaults (HTB {DEFAULT_INTERVAL:g} s, plugins "
          f"{DEFAULT_PLUGIN_INTERVAL:g} s; {elapsed * args.speedup / 60:.0f} min simulated): "
          f"{scaled:.4f} % of one core")
    print(f"datagrams received by the sink: {dict(sorted(counts.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
