"""Dynamic DNS: a host's address, first seen or changed, becomes ``<host>.<zone>`` A/AAAA.

A record belongs to one host: ``<host>.<zone>`` is named after the host's DNS
label (its short name, lower case), which ``web1``, ``WEB1`` and ``web1.lan``
share. The label is a configured host's if one has it, else the host first
seen with it; another host whose name maps to it is refused (``label_taken``),
so an unsigned datagram naming ``SIG1`` cannot move the record of a host that
must sign. docs/DNS.md.

Address events only queue work. The queue holds one entry per record name and
type, so a host that moves twice while queued is updated once, to its newest
address. ``DnsService`` drains it one ``nsupdate`` process at a time (script on
stdin, TSIG key with ``-k``), up to :data:`BATCH` records a process, one update
message a zone, as many records as wait: one record a process took a fleet of
1,000 new hosts 25 s and 100,000 over 40 minutes. It kills one that hangs past
``dns_timeout``, retries
failures with exponential backoff and publishes every outcome on the bus
(``dns.updated``, ``dns.failed``) for the journal: the queue, retries and
give-up are the retry lane the notifier uses too (heartbeat.server.retry).
docs/DNS.md.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from heartbeat.config.checks import dns_label as label_of
from heartbeat.config.server import ServerConfig
from heartbeat.events import Event, EventBus
from heartbeat.server.registry import Registry
from heartbeat.server.retry import Backoff, Failed, RetryLane, Try

__all__ = [
    "DNS_FAILED",
    "DNS_UPDATED",
    "DnsError",
    "DnsService",
    "DnsSettings",
    "DnsUpdate",
    "NsupdateFailed",
    "NsupdateProtocol",
    "dns_label",
    "nsupdate_script",
]

log = Logger()

DNS_UPDATED: Final = "dns.updated"
DNS_FAILED: Final = "dns.failed"  # data["final"]: no more retries
OUTPUT_MAX = 4096
BATCH: Final = 100
"""Records one nsupdate sends at most: about 8 KB of update message (TCP), well inside
what one transaction may hold; a failed batch is retried in halves (heartbeat.server.retry)."""


class DnsError(ValueError):
    """Why a host's records cannot be updated; ``code`` is a stable word for counters/APIs."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class DnsSettings:
    domains: tuple[str, ...] = ()
    nsupdate_bin: str = "/usr/bin/nsupdate"
    server: str | None = None
    key: str | None = None
    ttl: int = 60
    timeout: float = 10.0
    retries: int = 5
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def from_config(cls, config: ServerConfig) -> DnsSettings:
        return cls(domains=tuple(d.rstrip(".") for d in config.dyndomains),
                   nsupdate_bin=config.nsupdate_bin, server=config.nsupdate_server,
                   key=config.nsupdate_key, ttl=config.dns_ttl, timeout=config.dns_timeout,
                   retries=config.dns_retries)

    def argv(self) -> list[str]:
        """nsupdate's command line: TCP and UDP waits bounded well inside ``timeout``."""
        argv = [self.nsupdate_bin, "-t", str(max(1, int(self.timeout // 2))), "-u", "1", "-r", "1"]
        if self.key:
            argv += ["-k", self.key]
        return argv


@dataclass(frozen=True)
class DnsUpdate:
    """One record to set: ``name`` (absolute, no trailing dot) ``rtype`` -> ``addr``."""

    host: str
    name: str
    zone: str
    rtype: str
    addr: str

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.rtype


def dns_label(host: str) -> str:
    """The DNS label of ``host``: its short name, lower case; DnsError if it is not one."""
    label = label_of(host)
    if label is None:
        raise DnsError("not_a_label", f"host name {host!r} is not a DNS label")
    return label


def record_type(addr: str) -> tuple[str, str]:
    """(``A`` or ``AAAA``, the canonical address); DnsError for anything else."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise DnsError("not_an_address", f"{addr!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise DnsError("scoped_address", f"{addr!r} is a scoped (link-local) address")
    return ("A" if ip.version == 4 else "AAAA"), str(ip)


def nsupdate_script(updates: Sequence[DnsUpdate], server: str | None, ttl: int) -> bytes:
    """The commands nsupdate reads on stdin to replace ``updates``' records: one update
    message (one ``send``, all or nothing) a zone, the zones in the order first named."""
    lines = [f"server {server}"] if server else []
    by_zone: dict[str, list[DnsUpdate]] = {}
    for update in updates:
        by_zone.setdefault(update.zone, []).append(update)
    for zone, records in by_zone.items():
        lines.append(f"zone {zone}")
        for update in records:
            lines += [f"update delete {update.name}. {update.rtype}",
                      f"update add {update.name}. {ttl} {update.rtype} {update.addr}"]
        lines.append("send")
    return ("\n".join(lines) + "\n").encode("ascii")


class NsupdateProtocol(ProcessProtocol):
    """Writes the script, collects output, fires ``done`` with (exit code, signal, output)."""

    def __init__(self, script: bytes, done: Deferred[tuple[int | None, int | None, str]]) -> None:
        self.script = script
        self.done = done
        self.output = bytearray()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.script)
        self.transport.closeStdin()

    def _collect(self, data: bytes) -> None:
        room = OUTPUT_MAX - len(self.output)
        if room > 0:
            self.output += data[:room]

    def outReceived(self, data: bytes) -> None:
        self._collect(data)

    def errReceived(self, data: bytes) -> None:
        self._collect(data)

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        signal = getattr(reason.value, "signal", None)
        if not self.done.called:
            self.done.callback((code, signal, self.output.decode("utf-8", "replace")))


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


class NsupdateFailed(Exception):
    """One nsupdate attempt that did not update the record: ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DnsService(Service):
    """Queues record updates from address events; runs one nsupdate at a time, for up
    to :data:`BATCH` records.

    The queue, the retries and the give-up are a :class:`RetryLane` keyed by record
    (name and type): a newer address for a record replaces the update queued or
    waiting for its retry. A hung nsupdate is killed at ``timeout`` and its attempt
    ends when the process does.
    """

    name = "dns"

    def __init__(self, reactor: Any, registry: Registry, bus: EventBus,
                 settings: DnsSettings) -> None:
        self.reactor = reactor
        self.registry = registry
        self.bus = bus
        self.settings = settings
        self.lane: RetryLane[DnsUpdate] = RetryLane(
            reactor, self._attempt, self, retries=settings.retries, timeout=settings.timeout,
            backoff=settings.backoff, key=lambda update: update.key, expire=self._kill,
            batch=BATCH, attempt_batch=self._attempt_batch)
        self.current: list[DnsUpdate] = []
        self.runs = 0
        """nsupdate processes started."""
        self._process: IProcessTransport | None = None
        self.skipped: Counter[str] = Counter()
        self.last_error: str | None = None
        self._owners: dict[str, str] = {}
        """DNS label -> the host whose records it names (see the module)."""
        self._configured: set[str] = set()
        self._taken_logged = float("-inf")
        self.leader: Any = None
        """Whether this server leads (``.leading``); None: the only server. A follower
        only notes which hosts' addresses changed and queues them when it leads."""
        self.owed: set[str] = set()
        for name, host in registry.host_config.items():
            label = label_of(name)
            if label is not None and host.dns:
                self._owners.setdefault(label, name)
                self._configured.add(name)
        for known in sorted(registry, key=lambda h: (h.first_seen or 0.0, h.name)):
            label = label_of(known.name)
            if label is not None:
                self._owners.setdefault(label, known.name)

    def on_address(self, event: Event) -> None:
        """A ``host.address``: the host's records queued with its new address."""
        if self.leader is not None and not self.leader.leading:
            self.owed.add(event.host)
            return
        try:
            self.queue(event.host, event.data["addr"])
        except DnsError as e:
            self.skipped[e.code] += 1
            log.debug("dns: not updating {host}: {reason}", host=event.host, reason=e)

    def trigger(self, host: str) -> list[str]:
        """Queue ``host``'s records with its current address now (managers' "trigger DNS")."""
        known = self.registry.get(host)
        if known is None:
            raise DnsError("unknown_host", f"no host named {host!r}")
        if not known.addr:
            raise DnsError("no_address", f"no address known for {host!r}")
        return self.queue(host, known.addr)

    def lead(self, leading: bool) -> None:
        """Leading now: the records of the hosts whose address changed meanwhile, queued."""
        if not leading:
            return
        owed, self.owed = sorted(self.owed), set()
        for host in owed:
            try:
                self.trigger(host)
            except DnsError as e:
                self.skipped[e.code] += 1

    def on_removed(self, event: Event) -> None:
        """A removed host gives up its label (a configured host keeps it)."""
        label = label_of(event.host)
        if label is not None and self._owners.get(label) == event.host \
                and event.host not in self._configured:
            del self._owners[label]

    def owner(self, label: str) -> str | None:
        """The host the records of ``label`` belong to, if any has claimed it."""
        return self._owners.get(label)

    def queue(self, host: str, addr: str) -> list[str]:
        """Queue ``<host>.<zone>`` for every dyndomain; returns the names queued."""
        if not self.settings.domains:
            raise DnsError("no_domains", "no dyndomains configured")
        if not self.registry.config_for(host).dns:
            raise DnsError("dns_false", f"dns: false for {host!r}")
        label = dns_label(host)
        owner = self._owners.setdefault(label, host)
        if owner != host:
            now = self.reactor.seconds()
            if now - self._taken_logged >= 10.0:  # one line per 10 s under a flood
                self._taken_logged = now
                log.warn("dns: {host} is refused the records of {label!r}: they are "
                         "{owner}'s", host=host, label=label, owner=owner)
            raise DnsError("label_taken", f"the DNS label {label!r} of {host!r} belongs to "
                                          f"host {owner!r}")
        rtype, canonical = record_type(addr)
        names = []
        for zone in self.settings.domains:
            update = DnsUpdate(host, f"{label}.{zone}", zone, rtype, canonical)
            self.lane.offer(update)
            names.append(update.name)
        return names

    # -- one attempt: an nsupdate process
    def _attempt(self, update: DnsUpdate) -> Deferred[None]:
        return self._attempt_batch([update])

    def _attempt_batch(self, updates: list[DnsUpdate]) -> Deferred[None]:
        done: Deferred[tuple[int | None, int | None, str]] = Deferred()
        protocol = NsupdateProtocol(nsupdate_script(updates, self.settings.server,
                                                    self.settings.ttl), done)
        argv = self.settings.argv()
        try:
            self._process = self.reactor.spawnProcess(protocol, argv[0], argv, env=dict(os.environ))
        except OSError as e:
            raise NsupdateFailed(f"cannot run {argv[0]}: {e}") from None
        self.runs += 1
        self.current = updates
        return done.addCallback(self._ended)

    def _ended(self, outcome: tuple[int | None, int | None, str]) -> None:
        self._process = None
        self.current = []
        code, signal, output = outcome
        if code != 0:
            status = f"exit {code}" if code is not None else f"signal {signal}"
            detail = _last_line(output)
            raise NsupdateFailed(f"nsupdate {status}{': ' + detail if detail else ''}")

    def _kill(self, attempt: Deferred[Any]) -> None:
        """At the timeout: SIGKILL; the attempt ends (failed) when the process has."""
        if self._process is not None:
            with contextlib.suppress(ProcessExitedAlready):
                self._process.signalProcess("KILL")

    # -- what the lane reports
    def reason(self, failure: Failure, attempt: Try[DnsUpdate]) -> tuple[str, bool]:
        if attempt.timed_out:
            return f"nsupdate timed out after {self.settings.timeout:g}s and was killed", False
        if isinstance(failure.value, NsupdateFailed):
            return failure.value.reason, False
        return f"{type(failure.value).__name__}: {failure.value}", False

    def succeeded(self, attempt: Try[DnsUpdate]) -> None:
        update = attempt.item
        log.info("dns: {name} {rtype} {addr} updated", name=update.name, rtype=update.rtype,
                 addr=update.addr)
        self._publish(DNS_UPDATED, update, {"attempts": attempt.attempts})

    def failed(self, attempt: Try[DnsUpdate], outcome: Failed) -> None:
        update = attempt.item
        self.last_error = f"{update.name} {update.rtype}: {outcome.reason}"
        if outcome.final:
            log.error("dns: giving up on {name} {rtype} {addr} after {attempts} attempt(s): "
                      "{reason}", name=update.name, rtype=update.rtype, addr=update.addr,
                      attempts=outcome.attempt, reason=outcome.reason)
        else:
            log.warn("dns: updating {name} {rtype} {addr} failed (attempt {attempt}): {reason};"
                     " retrying in {delay:g}s", name=update.name, rtype=update.rtype,
                     addr=update.addr, attempt=outcome.attempt, reason=outcome.reason,
                     delay=outcome.retry_in)
        self._publish(DNS_FAILED, update, {"reason": outcome.reason, "attempt": outcome.attempt,
                                           "final": outcome.final, "retry_in": outcome.retry_in})

    def dropped(self, item: DnsUpdate, reason: str) -> None:
        """Never: one update per record is queued at most (coalescing bounds the queue)."""
        log.warn("dns: {name} {rtype} dropped: {reason}", name=item.name, rtype=item.rtype,
                 reason=reason)

    def abandoned(self, attempts: list[Try[DnsUpdate]]) -> None:
        log.warn("dns: {count} queued update(s) not sent at shutdown", count=len(attempts))

    def _publish(self, kind: str, update: DnsUpdate, data: dict[str, Any]) -> None:
        self.bus.publish(Event(kind, update.host, self.reactor.seconds(), {
            "name": update.name, "zone": update.zone, "rtype": update.rtype,
            "addr": update.addr, **data}))

    def startService(self) -> None:
        super().startService()
        self.lane.start()

    def stopService(self) -> Deferred[None]:
        """Wait for the nsupdate in flight (bounded by its kill timer); drop the rest."""
        super().stopService()
        return self.lane.close(send_queued=False)

    def to_json(self) -> dict[str, Any]:
        stats = self.lane.stats
        return {
            "domains": list(self.settings.domains),
            "queued": self.lane.pending,
            "running": self.current[0].name if self.current else None,
            "running_records": len(self.current),
            "runs": self.runs,
            "updated": stats.succeeded,
            "failed_attempts": stats.failed_attempts,
            "gave_up": stats.gave_up,
            "timeouts": stats.timeouts,
            "coalesced": stats.coalesced,
            "skipped": dict(self.skipped),
            "last_error": self.last_error,
        }
