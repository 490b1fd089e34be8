"""``make run``: the server in the foreground and, unless turned off, a local agent beside it.

The agent starts once the server answers on HTTP (``GET /api/0``, which needs no
login even with users configured), so its first plugin data is not lost, and
reports this machine to the server under its short host name. If the server
does not answer in time, or stops first, the launcher says so. The agent is
pointed at the server's own ``hb_port`` whatever its config says, so a server
config on other ports needs no agent config of its own. Ctrl-C (or SIGTERM)
stops both; the exit code is the server's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from heartbeat.config.agent import load_agent_config
from heartbeat.config.loader import ConfigError
from heartbeat.server.settings import load_settings

TWISTD = str(Path(sys.executable).with_name("twistd"))
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def say(text: str) -> None:
    print(f"make run: {text}", file=sys.stderr, flush=True)


def loopback(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def http_base(host: str, port: int) -> str:
    host = loopback(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def wait_for_server(url: str, server: subprocess.Popen[bytes],
                    timeout: float = READY_TIMEOUT) -> str | None:
    """None once ``url`` answers with any HTTP status, else why it did not."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"the server stopped (exit code {server.returncode}) before it answered"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return None
        except urllib.error.HTTPError:
            return None  # it answers: that is all we wait for
        except (OSError, urllib.error.URLError) as e:
            last = str(getattr(e, "reason", None) or e)
            time.sleep(0.2)
    return f"the server did not answer {url} within {timeout:.0f} s ({last})"


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


def agent_config_for(path: str, hb_port: int, directory: str) -> str:
    """``path`` itself if it sends to ``hb_port``, else a copy that does, in ``directory``."""
    if load_agent_config(path).hb_port == hb_port:
        return path
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    data["hb_port"] = hb_port
    copy = Path(directory) / "agent.yaml"
    copy.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(copy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="server config")
    parser.add_argument("--agent-config", help="agent config; omit to run no agent")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT,
                        help="seconds to wait for the server before giving up on the agent")
    args = parser.parse_args(argv)
    server_argv = [TWISTD, "--nodaemon", "--pidfile=", "heartbeat", "--config", args.config]
    try:
        server_config = load_settings(args.config).config
        if args.agent_config:
            load_agent_config(args.agent_config)
    except ConfigError as e:
        say(f"config error: {e}")
        return 2
    base = http_base(server_config.hbd_host, server_config.hbd_port)
    login = " (log in as one of its users)" if server_config.users else ""
    if not args.agent_config:
        say(f"web UI at {base}/{login}")
        os.execv(TWISTD, server_argv)
    processes: list[subprocess.Popen[bytes]] = []

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    with tempfile.TemporaryDirectory(prefix="hb-make-run-") as scratch:
        try:
            server = subprocess.Popen(server_argv)
            processes.append(server)
            problem = wait_for_server(f"{base}/api/0", server, args.timeout)
            if problem is not None:
                say(f"{problem}: no agent started")
                return server.wait()
            agent = agent_config_for(args.agent_config, server_config.hb_port, scratch)
            processes.append(subprocess.Popen(
                [TWISTD, "--nodaemon", "--pidfile=", "heartbeat-agent", "--config", agent,
                 loopback(server_config.hb_host)]))
            say(f"web UI at {base}/{login}; a local agent reports this machine "
                f"(make run AGENT=0 runs the server alone)")
            return server.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop(processes)


if __name__ == "__main__":
    sys.exit(main())
