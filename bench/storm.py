"""A fleet's fall told by e-mail: what each owner gets, from a real SMTP server.

    .venv/bin/python bench/storm.py [--hosts 10000] [--users 100] [--interval 20]

Lists ``--hosts`` hosts in the config, owned in blocks by ``--users`` users (the first
user owns the first hosts, and so on), each user with an address and e-mail as their
channel, and starts the real ``twistd -n heartbeat`` with its e-mail channel pointed
at an SMTP server on loopback (Twisted's, in this process, without TLS). Once every
host has sent one heartbeat nothing more is sent, the case of the monitoring link
lost: the whole fleet falls DOWN. The first ``notify_burst`` hosts are mailed one by
one, the storm guard holds the rest for digests, and past ``notify_queue_limit`` a
window's notifications are dropped from the queue but counted and listed in their
recipients' digests (docs/NOTIFICATIONS.md, Storms).

The script waits until the fleet is DOWN and no mail has come for ``--quiet``
seconds, then prints what the owners got: the mails, per user (fewest, median,
most), how many of each user's own hosts their mails name (fewest, median, most),
hosts named to a user who does not own them (never any), users without a mail, the
e-mail channel's counters, and the seconds from the first DOWN to the last mail.
Everything is on loopback, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import bring_in, heartbeats, send  # noqa: E402
from bench.inventory import PASSWORD, InventoryServer  # noqa: E402
from tests.peers import Mail, SmtpSink  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.threads import blockingCallFromThread  # noqa: E402
from twisted.mail import smtp  # noqa: E402

from heartbeat.passwords import hash_password  # noqa: E402

HOST = re.compile(r"\bhost\d{6}\b")


class CountingSink(SmtpSink):
    """Keeps each message (one per recipient) in a list the bench's thread reads."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.received: list[Mail] = []
        self.last = 0.0

    def deliver(self, user: smtp.User, data: bytes, tls: bool, authenticated: bool) -> None:
        self.received.append(Mail(str(user.orig), [str(user.dest)], data, tls, authenticated))
        self.last = time.monotonic()


def owner(n: int, hosts: int, users: int) -> int:
    return n * users // hosts


def named(mail: Mail) -> set[str]:
    """The hosts a mail names, in its subject or its lines."""
    message = mail.message
    body = message.get_body(preferencelist=("plain",))
    text = str(message["Subject"]) + "\n" + (body.get_content() if body is not None else "")
    return set(HOST.findall(text))


def report(mails: list[Mail], hosts: int, users: int) -> dict[str, Any]:
    per_user: Counter[int] = Counter()
    own: dict[int, set[str]] = defaultdict(set)
    strangers = 0
    for mail in mails:
        user = int(mail.recipients[0].split("@")[0][4:])
        per_user[user] += 1
        for name in named(mail):
            if owner(int(name[4:]), hosts, users) == user:
                own[user].add(name)
            else:
                strangers += 1
    counts = [per_user[u] for u in range(users)]
    owned = [len(own[u]) for u in range(users)]
    return {
        "mails": len(mails),
        "mails_per_user": {"fewest": min(counts), "median": statistics.median(counts),
                           "most": max(counts)},
        "own_hosts_named": {"fewest": min(owned), "median": statistics.median(owned),
                            "most": max(owned), "of": hosts // users},
        "named_to_a_stranger": strangers,
        "users_without_mail": sum(1 for c in counts if c == 0),
    }


def recover(server: InventoryServer, sink: CountingSink,
            args: argparse.Namespace) -> dict[str, Any]:
    """The fleet heard again: every host UP, and what the owners get of it."""
    before = len(sink.received)
    began = time.monotonic()
    slowest = 0.0

    def aside() -> None:
        nonlocal slowest
        asked = time.monotonic()
        server.get("/api/0/status")
        slowest = max(slowest, time.monotonic() - asked)

    datagrams = heartbeats(args.hosts, 3600)  # not silent again while the mails go
    for _ in range(10):
        send(server, datagrams, aside)
        if server.get("/api/0/status")["hosts"]["UP"] == args.hosts:
            break
    up = time.monotonic()
    while time.monotonic() - max(sink.last, up) <= args.quiet:
        aside()
        time.sleep(0.1)
    figures = report(sink.received[before:], args.hosts, args.users)
    figures["heard_to_last_mail_s"] = round(sink.last - began, 1)
    figures["status_slowest_ms"] = round(slowest * 1000, 1)
    status = server.get("/api/0/status")
    figures["up"] = status["hosts"]["UP"]
    figures["collector"] = status.get("collector")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--interval", type=float, default=20.0,
                        help="every host's interval (s): longer than bringing the fleet in")
    parser.add_argument("--quiet", type=float, default=40.0,
                        help="seconds without a mail, the fleet DOWN, that end the run "
                             "(longer than notify_window)")
    parser.add_argument("--maintenance", action="store_true",
                        help="the fleet falls inside a maintenance window of every host "
                             "(none mailed), which then ends: each host STILL DOWN")
    parser.add_argument("--recover", action="store_true",
                        help="then the fleet is heard again: every host UP, and its mails")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if not 1 <= args.users <= args.hosts:
        parser.error("--users must be between 1 and --hosts")
    sink = CountingSink()
    threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                     daemon=True).start()
    blockingCallFromThread(reactor, sink.start)
    secret = hash_password(PASSWORD)
    users = {f"user{u:05d}": {"email": f"user{u:05d}@example.com",
                              "notification_channels": ["email"]} for u in range(args.users)}
    section = {f"host{n:06d}": {"owner": f"user{owner(n, args.hosts, args.users):05d}"}
               for n in range(args.hosts)}  # the interval: as each heartbeat announces
    with tempfile.TemporaryDirectory() as tmp:
        server = InventoryServer(
            Path(tmp), ws_port=None, source_rate=1e9, max_hosts=10**7,
            max_unconfigured_hosts=10**7, grace=5.0, monitor_interval=1.0,
            email={"smtp_host": "127.0.0.1", "smtp_port": sink.port, "tls": "none"},
            users={"admin": {"admin": True, "password": secret}, **users}, hosts=section)
        server.start()
        try:
            server.log_in()
            bring_in(server, heartbeats(args.hosts, args.interval),
                     lambda s: s["hosts"]["UP"] == args.hosts)
            window = None
            figures_window: dict[str, float] = {}
            if args.maintenance:
                code, body = server.request("POST", "/api/0/maintenance", {
                    "hosts": ["host*"], "start": time.time(), "duration": "2h",
                    "comment": "the fleet's link"})
                if code != 201:
                    raise RuntimeError(f"POST /api/0/maintenance: {code} {body}")
                window = body["id"]
            print(f"{args.hosts:,} hosts UP, owned by {args.users:,} users; "
                  f"the fleet falls silent{' in maintenance' if window else ''}", flush=True)
            stop = time.monotonic() + args.timeout
            first = fallen = None
            status: dict[str, Any] = {}
            slowest = 0.0
            while time.monotonic() < stop:
                asked = time.monotonic()
                status = server.get("/api/0/status")
                slowest = max(slowest, time.monotonic() - asked)
                down = status["hosts"]["DOWN"]
                if down and first is None:
                    first = time.monotonic()
                if down == args.hosts and fallen is None:
                    fallen = time.monotonic()
                    if window is not None:
                        time.sleep(args.quiet)  # every DOWN held; then the window ends
                        held = len(sink.received)
                        print(f"all DOWN in maintenance, {held} mails; the window ends",
                              flush=True)
                        first = fallen = time.monotonic()
                        code, body = server.request("DELETE", f"/api/0/maintenance/{window}")
                        if code != 200:
                            raise RuntimeError(f"DELETE the window: {code} {body}")
                        figures_window = {"delete_ms": round((time.monotonic() - first) * 1000, 1),
                                          "status_slowest_in_maintenance_ms":
                                              round(slowest * 1000, 1)}
                        slowest = 0.0
                        window = None
                if fallen is not None and time.monotonic() - max(sink.last, fallen) > args.quiet:
                    break
                time.sleep(0.1)
            else:
                print(f"not done within {args.timeout:.0f} s: {status.get('hosts')}, "
                      f"{len(sink.received)} mails")
                return 1
            assert first is not None
            figures = report(list(sink.received), args.hosts, args.users)
            figures["first_down_to_last_mail_s"] = round(sink.last - first, 1)
            figures["status_slowest_ms"] = round(slowest * 1000, 1)
            if args.maintenance:
                figures.update(figures_window)
                figures["mails_in_maintenance"] = held
                figures["problems_released"] = status["operations"]["released"] \
                    if "operations" in status else None
            channel = status["notify"]["channels"]["email"]
            figures["email"] = {key: channel[key] for key in (
                "sent", "digests", "digested", "dropped_queue_full", "gave_up")}
            if args.recover:
                figures["recovery"] = recover(server, sink, args)
            print(json.dumps(figures, indent=1))
        finally:
            server.stop()
            reactor.callFromThread(reactor.stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
