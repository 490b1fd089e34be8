"""The ``heartbeat`` console script: one-shot commands next to the twistd services.

``heartbeat send --boot SERVER`` and ``heartbeat send -m TEXT SERVER`` send one
message to every address of every SERVER and exit 0 once it has left;
``heartbeat send --job NAME SERVER -- command args`` runs a cron job's command and
reports its start, exit code and output to the server (docs/JOBS.md);
``heartbeat passwd NAME`` hashes a password for the server config. Each
subcommand is a function set as its parser's ``func``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import heartbeat
from heartbeat.agent.keys import signing_key
from heartbeat.agent.sender import host_boot_time, resolve_addresses
from heartbeat.config.agent import load_agent_config
from heartbeat.config.loader import ConfigError, default_config_path
from heartbeat.protocol import MSG_LEVELS, encode, next_seq, valid_host_name

__all__ = ["build_parser", "main", "passwd", "send"]


def _fail(message: str) -> int:
    print(f"heartbeat: {message}", file=sys.stderr)  # noqa: T201 - a CLI's answer
    return 2


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-65535)")
    return port


class _Udp:
    """Where and as whom ``heartbeat send`` sends datagrams: every address of every
    server, this host's name, and its signing key (from the agent config)."""

    def __init__(self, name: str, key: Any, port: int,
                 addresses: list[tuple[int, str, str]]) -> None:
        self.name = name
        self.key = key
        self.port = port
        self.addresses = addresses
        self.seq = 0

    def send(self, message: dict[str, Any]) -> list[str]:
        """``message`` (with name, ts, version) to every address; the errors, or [] when
        at least one copy left."""
        message = {**message, "name": self.name, "ts": time.time(),
                   "version": heartbeat.__version__}
        data = encode(message)
        sent = 0
        errors = []
        for family, ip, server in self.addresses:
            if self.key is not None:  # each copy its own seq: the server takes every one once
                self.seq = next_seq(self.seq, time.time())
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.sendto(data if self.key is None else self.key.seal(data, self.seq),
                                (ip, self.port))
                sent += 1
            except OSError as e:
                errors.append(f"{server} ({ip}): {e.strerror or e}")
        return [] if sent else errors or ["no server given"]


def _udp(args: argparse.Namespace) -> _Udp | str:
    """The UDP sender of ``args`` and the agent config, or what is wrong."""
    path = args.config or default_config_path(".hbc.yaml")
    try:
        config = load_agent_config(path)
        key = signing_key(config, str(path or "<defaults>"))
    except ConfigError as e:
        return f"config error: {e}"
    port = args.port or config.hb_port
    name = args.name or config.name or socket.gethostname().split(".")[0] or "localhost"
    if not valid_host_name(name):  # the server would drop it: say so instead of exit 0
        return (f"{name!r} is not a valid host name (1-253 of A-Z a-z 0-9 . _ -); "
                "use --name or name: in the config")
    addresses = []
    for server in args.servers:
        try:
            addresses += [(family, ip, server) for family, ip in resolve_addresses(server, port)]
        except OSError as e:
            return f"cannot resolve {server}: {getattr(e, 'strerror', None) or e}"
    return _Udp(name, key, port, addresses)


def send(args: argparse.Namespace) -> int:
    """Send one BOOT, SHUT or MSG to every address of every server; or with ``--job``, run
    a command as a cron job's run and report it (:func:`send_job`)."""
    if args.job is not None:
        return send_job(args)
    if not args.servers:
        return _fail("name the server(s) to send to")
    if args.command:
        return _fail("a command after -- goes with --job only")
    udp = _udp(args)
    if isinstance(udp, str):
        return _fail(udp)
    message: dict[str, Any]
    if args.boot:
        boot_time = host_boot_time()
        message = {"ID": "BOOT"} if boot_time is None else {"ID": "BOOT", "boot_time": boot_time}
    elif args.shutdown:
        message = {"ID": "SHUT"}
    else:
        message = {"ID": "MSG", "text": args.message, "level": args.level}
    errors = udp.send(message)
    if errors:
        return _fail("nothing sent: " + "; ".join(errors))
    return 0


JOB_TIMEOUT = 10.0
"""Seconds an HTTP ping may take before ``heartbeat send --job`` gives up on it."""


def _http_ping(url: str, action: str | None, body: bytes = b"") -> str | None:
    """POST to the job's ping URL (``/start``, ``/<exit code>``); what went wrong, or None."""
    import urllib.error  # noqa: PLC0415 - only with --url
    import urllib.request  # noqa: PLC0415

    target = url.rstrip("/") + ("" if action is None else f"/{action}")
    request = urllib.request.Request(target, data=body, method="POST",
                                     headers={"Content-Type": "text/plain; charset=utf-8",
                                              "User-Agent": f"heartbeat/{heartbeat.__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=JOB_TIMEOUT) as answer:
            answer.read()
    except urllib.error.HTTPError as e:
        return f"{target}: HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return f"{target}: {getattr(e, 'reason', None) or e}"
    return None


def _run(command: list[str], keep: int) -> tuple[int, bytes]:
    """Run ``command`` with its output passed through to ours; (exit code, the last ``keep``
    bytes of its output). A signal's death is 128 + the signal, as a shell says it."""
    import subprocess  # noqa: PLC0415 - only with --job

    tail = bytearray()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
    except OSError as e:
        text = f"heartbeat: cannot run {command[0]}: {e.strerror or e}\n".encode()
        sys.stderr.buffer.write(text)
        return 127 if isinstance(e, FileNotFoundError) else 126, text
    assert process.stdout is not None
    out, fd = sys.stdout.buffer, process.stdout.fileno()
    for chunk in iter(lambda: os.read(fd, 65536), b""):
        out.write(chunk)
        out.flush()
        tail += chunk
        del tail[:-keep]
    code = process.wait()
    return (128 - code if code < 0 else code), bytes(tail)


def send_job(args: argparse.Namespace) -> int:
    """``heartbeat send --job NAME [--url URL | SERVER...] -- command args``: a start ping,
    the command (its output passed through), then its exit code and the tail of its
    output; exits with the command's own exit code. A ping that fails is reported on
    stderr and never stops the command."""
    from heartbeat.protocol import MAX_OUTPUT  # noqa: PLC0415

    if not args.command:
        return _fail("--job needs the command to run after --, e.g. "
                     "heartbeat send --job backup SERVER -- /usr/local/bin/backup")
    if (args.url is None) == (not args.servers):
        return _fail("--job reports over HTTP (--url, the job's ping URL) or over UDP "
                     "(SERVER...): give one of them")
    udp: _Udp | None = None
    if args.url is None:
        found = _udp(args)
        if isinstance(found, str):
            return _fail(found)
        udp = found

    def ping(what: str, rc: int | None = None, log: bytes = b"") -> None:
        if udp is not None:
            message: dict[str, Any] = {"ID": "JOB", "job": args.job, "ping": what}
            if rc is not None:
                message["rc"] = rc
            if log:
                message["log"] = log.decode("utf-8", "replace")[-MAX_OUTPUT:]
            if args.uuid:
                message["uuid"] = args.uuid
            errors = udp.send(message)
            problem = "; ".join(errors) if errors else None
        else:
            problem = _http_ping(args.url, "start" if what == "start" else str(rc), log)
        if problem is not None:
            sys.stderr.write(f"heartbeat: job {args.job}: the {what} ping failed: {problem}\n")

    ping("start")
    code, tail = _run(args.command, 10_000)
    ping("exit", min(code, 255), tail)
    return code


def passwd(args: argparse.Namespace) -> int:
    """Prompt twice (or read --stdin) and print the hash line to paste under users.NAME.

    The name and the password must pass the rules the API applies
    (:mod:`heartbeat.server.user_policy`): a hash the server would refuse to
    be given is not made.
    """
    from heartbeat.passwords import hash_password  # noqa: PLC0415 - only this command
    from heartbeat.server.user_policy import name_problem, password_problem  # noqa: PLC0415

    problem = name_problem(args.name)
    if problem is not None:
        sys.stderr.write(f"heartbeat passwd: {problem}\n")
        return 2
    if args.reset_totp:
        return reset_totp(args.name, args.config)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"Password for {args.name}: ")
            again = getpass.getpass("Again: ")
        except (EOFError, KeyboardInterrupt):
            sys.stderr.write("\nheartbeat passwd: cancelled\n")
            return 1
        if password != again:
            sys.stderr.write("heartbeat passwd: the passwords differ; nothing written\n")
            return 1
    problem = password_problem(password)
    if problem is not None:
        sys.stderr.write(f"heartbeat passwd: {problem}; nothing written\n")
        return 1
    sys.stderr.write(f"Paste under users.{args.name} in the server config:\n")
    sys.stdout.write(f"password: {hash_password(password)}\n")
    return 0


def reset_totp(name: str, config_path: Path | None) -> int:
    """Remove ``name``'s second factor from the server's store (a lost device, no admin).

    It takes effect at the user's next login, also while the server runs (a
    login reads the user's second factor from the store). The store is not
    upgraded: one older than second factors has none to remove.
    """
    import sqlite3  # noqa: PLC0415 - only this command

    from heartbeat.config.loader import ConfigError, load_config  # noqa: PLC0415
    from heartbeat.config.server import ServerConfig  # noqa: PLC0415
    from heartbeat.server.compose import STORE_FILE  # noqa: PLC0415

    path = config_path or default_config_path(".hb.yaml")
    try:
        config = load_config(ServerConfig, path)
    except ConfigError as e:
        sys.stderr.write(f"heartbeat passwd: config error: {e}\n")
        return 2
    store = Path(config.state_dir) / STORE_FILE
    if not store.is_file():
        sys.stderr.write(f"heartbeat passwd: no store at {store} (state_dir of "
                         f"{path or 'the built-in defaults'}; give the server's -c FILE)\n")
        return 2
    owner = store.stat()
    try:
        conn = sqlite3.connect(store, timeout=10)
        try:
            known = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                 " AND name = 'totp'").fetchone()
            removed = known is not None and conn.execute(
                "DELETE FROM totp WHERE user = ?", (name,)).rowcount > 0
            conn.commit()
        finally:
            conn.close()
    except sqlite3.Error as e:
        sys.stderr.write(f"heartbeat passwd: cannot change {store}: {e}\n")
        return 2
    for extra in (store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
        # Made by us as root, they would lock the service's user out of its own store.
        if extra.exists() and extra.stat().st_uid != owner.st_uid and os.geteuid() == 0:
            os.chown(extra, owner.st_uid, owner.st_gid)
    if not removed:
        sys.stderr.write(f"heartbeat passwd: {name} has no second factor in {store}\n")
        return 1
    sys.stderr.write(f"heartbeat passwd: the second factor of {name} is removed: they log in "
                     f"with their password alone (and must enrol again if the server requires "
                     f"it)\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartbeat", description="One-shot tools beside the heartbeat server and agent.")
    parser.add_argument("--version", action="version", version=heartbeat.version_line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "send", help="send one BOOT, SHUT or MSG to the server(s); or run a cron job's "
                     "command and report it (--job NAME ... -- COMMAND ARGS)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--boot", action="store_true", help="this host has booted")
    what.add_argument("--shutdown", action="store_true", help="this host is going down")
    what.add_argument("-m", "--message", metavar="TEXT", help="free text for the server")
    what.add_argument("--job", metavar="NAME",
                      help="run the command after -- as a run of the server's job NAME: "
                           "start, exit code and the tail of its output (docs/JOBS.md)")
    p.add_argument("--level", choices=MSG_LEVELS, default="info", help="level of -m")
    p.add_argument("--url", metavar="PING_URL",
                   help="with --job: report over HTTP to the job's ping URL "
                        "(http://SERVER:50004/ping/UUID) instead of UDP to SERVER")
    p.add_argument("--uuid", help="with --job over UDP: the job's UUID (needed when this "
                                  "host is not the job's host:)")
    p.add_argument("-c", "--config", type=Path, help="agent config (default ~/.hbc.yaml)")
    p.add_argument("--name", help="this host's name (default: config, else short host name)")
    p.add_argument("--port", type=_port, help="server UDP port (default: config hb_port)")
    p.add_argument("servers", nargs="*", metavar="SERVER")
    p.set_defaults(func=send, command=[])

    p = commands.add_parser(
        "passwd", help="hash a password for users.NAME.password in the server config")
    p.add_argument("name", help="the user the password is for (shown in the prompt)")
    p.add_argument("--stdin", action="store_true",
                   help="read the password from the first line of standard input")
    p.add_argument("--reset-totp", action="store_true",
                   help="instead: remove the user's second factor (TOTP) from the server's "
                        "store, for a lost device")
    p.add_argument("-c", "--config", type=Path,
                   help="with --reset-totp: the server config naming state_dir "
                        "(default ~/.hb.yaml)")
    p.set_defaults(func=passwd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if words[:1] == ["send"] and "--" in words:  # heartbeat send --job NAME ... -- cmd args
        at = words.index("--")
        words, command = words[:at], words[at + 1:]
    args = build_parser().parse_args(words)
    if command:
        args.command = command
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
