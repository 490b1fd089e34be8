"""Dynamic DNS: a host's address, first seen or changed, becomes ``<host>.<zone>`` A/AAAA.

Address events only queue work. The queue holds one entry per record name and
type, so a host that moves twice while queued is updated once, to its newest
address. ``DnsService`` drains it one ``nsupdate`` process at a time (script on
stdin, TSIG key with ``-k``), kills one that hangs past ``dns_timeout``, retries
failures with exponential backoff and publishes every outcome on the bus
(``dns.updated``, ``dns.failed``) for the journal. docs/DNS.md.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from heartbeat.config.server import ServerConfig
from heartbeat.events import Event, EventBus
from heartbeat.server.backoff import Backoff
from heartbeat.server.registry import Registry

__all__ = [
    "DNS_FAILED",
    "DNS_UPDATED",
    "DnsError",
    "DnsService",
    "DnsSettings",
    "DnsUpdate",
    "NsupdateProtocol",
    "dns_label",
    "nsupdate_script",
]

log = Logger()

DNS_UPDATED: Final = "dns.updated"
DNS_FAILED: Final = "dns.failed"  # data["final"]: no more retries
OUTPUT_MAX = 4096
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


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


@dataclass(eq=False)
class DnsUpdate:
    """One record to set: ``name`` (absolute, no trailing dot) ``rtype`` -> ``addr``."""

    host: str
    name: str
    zone: str
    rtype: str
    addr: str
    attempts: int = 0
    not_before: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.rtype


def dns_label(host: str) -> str:
    """The DNS label of ``host``: its short name, lower case; DnsError if it is not one."""
    label = host.split(".", 1)[0].lower()
    if not _LABEL.fullmatch(label):
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


def nsupdate_script(update: DnsUpdate, server: str | None, ttl: int) -> bytes:
    """The commands nsupdate reads on stdin to replace one record."""
    lines = [f"server {server}"] if server else []
    lines += [
        f"zone {update.zone}",
        f"update delete {update.name}. {update.rtype}",
        f"update add {update.name}. {ttl} {update.rtype} {update.addr}",
        "send",
    ]
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
        self.done.callback((code, signal, self.output.decode("utf-8", "replace")))


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


class DnsService(Service):
    """Queues record updates from address events; runs one nsupdate at a time."""

    name = "dns"

    def __init__(self, reactor: Any, registry: Registry, bus: EventBus,
                 settings: DnsSettings) -> None:
        self.reactor = reactor
        self.registry = registry
        self.bus = bus
        self.settings = settings
        self.pending: dict[tuple[str, str], DnsUpdate] = {}
        self.current: DnsUpdate | None = None
        self._process: IProcessTransport | None = None
        self._kill_call: IDelayedCall | None = None
        self._wake: IDelayedCall | None = None
        self._killed = False
        self._stopped: Deferred[None] | None = None
        self.updated = 0
        self.failed_attempts = 0
        self.gave_up = 0
        self.timeouts = 0
        self.coalesced = 0
        self.skipped: Counter[str] = Counter()
        self.last_error: str | None = None

    def on_address(self, event: Event) -> None:
        """A ``host.address``: the host's records queued with its new address."""
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

    def queue(self, host: str, addr: str) -> list[str]:
        """Queue ``<host>.<zone>`` for every dyndomain; returns the names queued."""
        if not self.settings.domains:
            raise DnsError("no_domains", "no dyndomains configured")
        if not self.registry.config_for(host).dns:
            raise DnsError("dns_false", f"dns: false for {host!r}")
        label = dns_label(host)
        rtype, canonical = record_type(addr)
        names = []
        for zone in self.settings.domains:
            update = DnsUpdate(host, f"{label}.{zone}", zone, rtype, canonical)
            if update.key in self.pending:
                self.coalesced += 1
                del self.pending[update.key]
            self.pending[update.key] = update
            names.append(update.name)
        self._drain()
        return names

    def _drain(self) -> None:
        if self.current is not None or not self.running:
            return
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        now = self.reactor.seconds()
        ready = next((u for u in self.pending.values() if u.not_before <= now), None)
        if ready is None:
            if self.pending:
                soonest = min(u.not_before for u in self.pending.values())
                self._wake = self.reactor.callLater(soonest - now, self._drain)
            return
        del self.pending[ready.key]
        self._run(ready)

    def _run(self, update: DnsUpdate) -> None:
        update.attempts += 1
        self.current = update
        self._killed = False
        done: Deferred[tuple[int | None, int | None, str]] = Deferred()
        protocol = NsupdateProtocol(nsupdate_script(update, self.settings.server,
                                                    self.settings.ttl), done)
        done.addCallback(self._finished, update)
        done.addErrback(lambda f: log.failure("dns: handling the nsupdate result failed", f))
        argv = self.settings.argv()
        try:
            self._process = self.reactor.spawnProcess(protocol, argv[0], argv, env=dict(os.environ))
        except OSError as e:
            done.callback((None, None, f"cannot run {argv[0]}: {e}"))
            return
        self._kill_call = self.reactor.callLater(self.settings.timeout, self._kill)

    def _kill(self) -> None:
        self._kill_call = None
        if self._process is None:
            return
        self._killed = True
        with contextlib.suppress(ProcessExitedAlready):
            self._process.signalProcess("KILL")

    def _finished(self, outcome: tuple[int | None, int | None, str], update: DnsUpdate) -> None:
        code, signal, output = outcome
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        self._process = None
        self.current = None
        if code == 0 and not self._killed:
            self._succeeded(update)
        else:
            if self._killed:
                self.timeouts += 1
                reason = f"nsupdate timed out after {self.settings.timeout:g}s and was killed"
            elif code is None and signal is None:
                reason = output
            else:
                status = f"exit {code}" if code is not None else f"signal {signal}"
                detail = _last_line(output)
                reason = f"nsupdate {status}{': ' + detail if detail else ''}"
            self._failed(update, reason)
        if self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)
        self._drain()

    def _succeeded(self, update: DnsUpdate) -> None:
        self.updated += 1
        log.info("dns: {name} {rtype} {addr} updated", name=update.name, rtype=update.rtype,
                 addr=update.addr)
        self._publish(DNS_UPDATED, update, {"attempts": update.attempts})

    def _failed(self, update: DnsUpdate, reason: str) -> None:
        self.failed_attempts += 1
        self.last_error = f"{update.name} {update.rtype}: {reason}"
        newer = update.key in self.pending
        final = newer or not self.running or update.attempts > self.settings.retries
        data: dict[str, Any] = {"reason": reason, "attempt": update.attempts, "final": final,
                                "retry_in": None}
        if final:
            if not newer:
                self.gave_up += 1
            log.error("dns: giving up on {name} {rtype} {addr} after {attempts} attempt(s): "
                      "{reason}", name=update.name, rtype=update.rtype, addr=update.addr,
                      attempts=update.attempts, reason=reason)
        else:
            delay = self.settings.backoff.delay(update.attempts)
            data["retry_in"] = delay
            update.not_before = self.reactor.seconds() + delay
            self.pending[update.key] = update
            log.warn("dns: updating {name} {rtype} {addr} failed (attempt {attempt}): {reason};"
                     " retrying in {delay:g}s", name=update.name, rtype=update.rtype,
                     addr=update.addr, attempt=update.attempts, reason=reason, delay=delay)
        self._publish(DNS_FAILED, update, data)

    def _publish(self, kind: str, update: DnsUpdate, data: dict[str, Any]) -> None:
        self.bus.publish(Event(kind, update.host, self.reactor.seconds(), {
            "name": update.name, "zone": update.zone, "rtype": update.rtype,
            "addr": update.addr, **data}))

    def startService(self) -> None:
        super().startService()
        self._drain()

    def stopService(self) -> Deferred[None]:
        """Wait for the nsupdate in flight (bounded by its kill timer); drop the rest."""
        super().stopService()
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        if self.pending:
            log.warn("dns: {count} queued update(s) not sent at shutdown", count=len(self.pending))
        if self.current is None:
            return succeed(None)
        self._stopped = Deferred()
        return self._stopped

    def to_json(self) -> dict[str, Any]:
        return {
            "domains": list(self.settings.domains),
            "queued": len(self.pending),
            "running": None if self.current is None else self.current.name,
            "updated": self.updated,
            "failed_attempts": self.failed_attempts,
            "gave_up": self.gave_up,
            "timeouts": self.timeouts,
            "coalesced": self.coalesced,
            "skipped": dict(self.skipped),
            "last_error": self.last_error,
        }
