"""``make run``: the server in the foreground and, unless turned off, a local agent beside it.

The agent starts once the server answers on HTTP, so its first plugin data is not
lost, and reports this machine to the server under its short host name. Ctrl-C
(or SIGTERM) stops both; the exit code is the server's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from heartbeat.config import ConfigError, load_agent_config, load_server_config

TWISTD = str(Path(sys.executable).with_name("twistd"))
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host


def wait_for_server(url: str, server: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    return False


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="server config")
    parser.add_argument("--agent-config", help="agent config; omit to run no agent")
    args = parser.parse_args(argv)
    server_argv = [TWISTD, "--nodaemon", "--pidfile=", "heartbeat", "--config", args.config]
    if not args.agent_config:
        os.execv(TWISTD, server_argv)
    try:
        server_config = load_server_config(args.config)
        agent_config = load_agent_config(args.agent_config)
    except ConfigError as e:
        print(f"make run: config error: {e}", file=sys.stderr)
        return 2
    if agent_config.hb_port != server_config.hb_port:
        print(f"make run: {args.agent_config}: hb_port {agent_config.hb_port} is not the "
              f"server's {server_config.hb_port}; the agent would not be heard",
              file=sys.stderr)
        return 2
    processes: list[subprocess.Popen[bytes]] = []

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        server = subprocess.Popen(server_argv)
        processes.append(server)
        url = (f"http://{_loopback(server_config.hbd_host)}:{server_config.hbd_port}"
               "/api/0/status").replace("http://::1", "http://[::1]")
        if wait_for_server(url, server):
            processes.append(subprocess.Popen(
                [TWISTD, "--nodaemon", "--pidfile=", "heartbeat-agent", "--config",
                 args.agent_config, _loopback(server_config.hb_host)]))
            print(f"make run: a local agent reports this machine; see {url[:-len('status')]}"
                  "hosts  (make run AGENT=0 runs the server alone)", file=sys.stderr)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
