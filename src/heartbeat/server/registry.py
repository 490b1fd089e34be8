"""Host registry: the pure state machine of every host the server knows.

``Registry.apply(message, source, now)`` takes one decoded message and returns
the events it caused and the replies owed to the sender, or why it was refused
(the registry's own bounds: new host names, plugin names, plugin bytes);
``expire(now)`` turns silent hosts DOWN, or UNREACHABLE when the hosts they are
reached through (``parents:``, dependencies.py) are down themselves. Every
heartbeat and every timeout is an evaluation of the host's state for flap
detection (flapping.py); ``recover_after`` heartbeats in a row bring a host back
UP. Nothing here reads a clock or touches a socket, so every rule is tested with
plain values.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from sys import intern
from typing import Any, Final

from heartbeat.config.server import HostConfig
from heartbeat.events import (
    HOST_ADDRESS,
    HOST_BOOT,
    HOST_COMMAND,
    HOST_DOWN,
    HOST_FLAPPING,
    HOST_MESSAGE,
    HOST_NEW,
    HOST_PLUGINS,
    HOST_REMOVED,
    HOST_RESULT,
    HOST_UNREACHABLE,
    HOST_UP,
    Event,
)
from heartbeat.protocol import Signed
from heartbeat.server import dependencies
from heartbeat.server.dependencies import DependencyGraph, ParentView
from heartbeat.server.flapping import HOST as HOST_SUBJECT
from heartbeat.server.flapping import FlapDetector
from heartbeat.server.limits import HostAdmission
from heartbeat.text import json_bytes

__all__ = ["ANSWER_BYTES", "BEAT_FIELDS", "CASCADE", "MAX_QUEUED_COMMANDS", "Host",
           "HostState", "Outcome", "PendingCommand", "PluginSample", "QueueFull", "Registry",
           "latest_message"]

_DEFAULT_HOST = HostConfig()
MAX_QUEUED_COMMANDS = 16
"""Commands waiting per host: a manager's flood of them is refused (409), not kept."""
ANSWER_BYTES = 8192
"""Bytes of commands sent in answer to one datagram (at least one command): a forged HTB
from a victim's address reflects at most this much (a command is at most about 34 KiB)."""
RECENT_RESULTS = 20
CASCADE: Final = 1000
"""Hosts behind a falling parent made UNREACHABLE with it at most, per pass of
:meth:`Registry.expire` (a monitor's slice) or per SHUT; the others fall at their own
deadlines, a slice at a time."""
BEAT_FIELDS: Final = ("port", "interval", "rtt", "last_seen", "expected_by")
"""What a heartbeat changes of a host whose state, address and version stay the same:
the store writes only these of such a host (:meth:`Registry.take_dirty`)."""
CHANGES_KEPT = 4096
"""Changes of the hosts a text index can be brought up to date from (Registry.changed_since)."""
LATEST_TEXT = 500
"""Characters of a text field kept in a host's latest message (the list shows one line)."""
_LATEST_FIELDS = ("ID", "text", "level", "boot_time", "cmd_id", "rc", "output", "status",
                  "kind", "cmd")


def latest_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a MSG, BOOT, SHUT or RES a host list shows as its latest message:
    the fields that say what it was, long texts cut to ``LATEST_TEXT`` characters."""
    kept: dict[str, Any] = {}
    for key in _LATEST_FIELDS:
        value = message.get(key)
        if value is None:
            continue
        if isinstance(value, str) and len(value) > LATEST_TEXT:
            value = value[:LATEST_TEXT - 1] + "…"
        if isinstance(value, str | int | float | bool):
            kept[key] = value
    return kept


class QueueFull(Exception):
    """A host has as many commands waiting as it may."""


class HostState(StrEnum):
    UNKNOWN = "UNKNOWN"
    UP = "UP"
    DOWN = "DOWN"
    UNREACHABLE = "UNREACHABLE"
    """Silent while every parent that reports is DOWN or UNREACHABLE: not notified."""


_SILENT = (HostState.DOWN, HostState.UNREACHABLE)


class PlgCharge:
    """The bytes of one PLG's text and how many of the plugins it set still hold it."""

    __slots__ = ("holders", "size")

    def __init__(self, size: int, holders: int) -> None:
        self.size = size
        self.holders = holders


@dataclass(slots=True)
class PluginSample:
    """When a plugin of a host last reported. Its data is not held here: the store keeps
    each plugin's latest data (``plugin_data``), alerting reads it from the message.

    Never changed once made (the store's writer thread reads the ones a host row
    captured): the plugins of one PLG share one, as those restored from the store do."""

    ts: float
    charge: PlgCharge | None = None
    """Shared by the plugins of one PLG: the bytes of its text, held until all are replaced."""


@dataclass(slots=True)
class PendingCommand:
    """A CMD or UPD waiting for the host's RES; resent after each HTB."""

    cmd_id: str
    kind: str  # "CMD" or "UPD"
    payload: dict[str, Any]
    queued: float
    by: str | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"cmd_id": self.cmd_id, "kind": self.kind, "queued": self.queued,
                "attempts": self.attempts, "by": self.by, **self.payload}


def _released(samples: dict[str, PluginSample],
              names: Iterable[str]) -> tuple[int, dict[PlgCharge, int]]:
    """What replacing the samples ``names`` gives back: the bytes of every PLG charge
    whose last holders they are, and how many holders each charge loses."""
    lost: dict[PlgCharge, int] = {}
    get = samples.get
    for name in names:
        sample = get(name)
        if sample is not None:
            charge = sample.charge
            if charge is not None:
                lost[charge] = lost.get(charge, 0) + 1
    freed = 0
    for charge, holders in lost.items():
        if holders == charge.holders:
            freed += charge.size
    return freed, lost


@dataclass(slots=True)
class Host:
    name: str
    state: HostState = HostState.UNKNOWN
    addr: str | None = None
    port: int | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    since: float | None = None
    interval: float | None = None
    rtt: float | None = None
    version: str | None = None
    boot_time: float | None = None
    down_reason: str | None = None
    seq: int | None = None
    signed: bool | None = None
    """Whether the last datagram was signed (None: none since the server started)."""
    key_id: str | None = None
    """The key that signed the last datagram, if one did."""
    expected_by: float | None = None
    plugins: dict[str, PluginSample] = field(default_factory=dict)
    plugin_bytes: int = 0
    """Bytes of the PLG texts its plugins' data came from (see Registry.plugin_bytes)."""
    pending: dict[str, PendingCommand] = field(default_factory=dict)
    results: deque[dict[str, Any]] | None = None
    """The last ``RECENT_RESULTS`` results (None until the first: an empty deque is 760
    bytes, 76 MB at 100,000 hosts that never ran a command)."""
    latest: tuple[float, dict[str, Any]] | None = None
    """The newest MSG, BOOT, SHUT or RES (server time, :func:`latest_message`)."""
    good_heartbeats: int = 0
    """Heartbeats in a row while DOWN or UNREACHABLE, toward ``recover_after``."""

    def add_result(self, result: dict[str, Any]) -> None:
        """Keep ``result`` among the host's recent ones."""
        if self.results is None:
            self.results = deque(maxlen=RECENT_RESULTS)
        self.results.append(result)

    def to_json(self, config: HostConfig = _DEFAULT_HOST) -> dict[str, Any]:
        """The API shape of a host."""
        return {
            "name": self.name,
            "state": self.state.value,
            "addr": self.addr,
            "port": self.port,
            "last_seen": self.last_seen,
            "since": self.since,
            "first_seen": self.first_seen,
            "interval": self.interval,
            "rtt": self.rtt,
            "version": self.version,
            "boot_time": self.boot_time,
            "down_reason": self.down_reason,
            "watch": config.watch,
            "plugins": sorted(self.plugins),
            "pending_commands": len(self.pending),
            "signed": self.signed,
            "key_id": self.key_id,
            "description": config.description,
            "tags": list(config.tags),
            "latest_message": None if self.latest is None else {
                "ts": self.latest[0], "message": self.latest[1]},
        }


@dataclass(slots=True)
class Outcome:
    """What one message caused: events for the bus, replies for the sender.

    ``refused`` names the bound a message would have broken (a drop reason); a
    refused message changed nothing and has neither events nor replies. A value
    its caller only reads (not ``frozen``: one a datagram, and freezing costs 1 µs).
    """

    events: list[Event]
    replies: list[dict[str, Any]]
    refused: str | None = None


_NOTHING = Outcome([], [])


class Registry:
    """Every known host, keyed by name.

    Bounds (each None: unbounded, for tests and tools): before a message creates
    a host the registry does not know, ``admission`` must let it in; a PLG may
    not take a host past ``max_plugins`` plugin names, nor the plugin data of
    unconfigured hosts past ``max_plugin_bytes`` (counted as the bytes of the PLG
    texts it came from). Configured hosts are always admitted.
    """

    def __init__(
        self,
        *,
        grace: float,
        default_interval: float,
        host_config: Mapping[str, HostConfig] | None = None,
        command_attempts: int = 5,
        admission: HostAdmission | None = None,
        max_plugins: int | None = None,
        max_plugin_bytes: int | None = None,
        dependencies: DependencyGraph | None = None,
        flaps: FlapDetector | None = None,
    ) -> None:
        self.grace = grace
        self.default_interval = default_interval
        self.host_config: Mapping[str, HostConfig] = host_config or {}
        self.command_attempts = command_attempts
        self.admission = admission
        self.max_plugins = max_plugins
        self.max_plugin_bytes = max_plugin_bytes
        self.dependencies = dependencies or DependencyGraph()
        self.flaps = flaps
        """Flap detection of host states (None: none)."""
        self.hosts: dict[str, Host] = {}
        self._names: list[str] = []
        """Every host's name, sorted: pages of the host list start by bisection."""
        self._by_state: dict[str, set[str]] = {state.value: set() for state in HostState}
        """The names of the hosts in each state, kept as states change: status counts
        them without a walk, and a page of a rare state sorts only its hosts."""
        self.generation = 0
        """Counts hosts added and removed and addresses changed: what a text index of the
        hosts (hostlist.TextIndex) is built from."""
        self.replaced = 0
        """Counts the changes of hosts that no event names: a restore from the store, the
        queued commands taken over from it. What is kept of hosts from their events
        (web.hostview.HostViews' JSON) starts again when it moves."""
        self._changes: deque[tuple[int, str]] = deque(maxlen=CHANGES_KEPT)
        """The last changes that moved ``generation``: (generation, host name)."""
        self._dirty: set[str] = set()
        self._beats: set[str] = set()
        """Hosts changed by heartbeats alone (:data:`BEAT_FIELDS`) since the last take."""
        self._commands_dirty: set[str] = set()
        self._command_ids = itertools.count(1)
        self.dispatching = True
        """Whether queued CMD/UPD go out with the ACKs: only on the leader of servers
        sharing a store (heartbeat.server.leader); a follower queues none either."""
        self.cascade_left = CASCADE
        """Hosts the fall being worked on may still take with it (:meth:`_cascade`)."""
        self.plugin_bytes = 0
        """Bytes of the PLG texts the data of all plugins held came from (bounded by
        ``max_plugin_bytes``); data restored from the store is not counted."""

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def get(self, name: str) -> Host | None:
        return self.hosts.get(name)

    def names(self) -> Sequence[str]:
        """Every host's name in sorted order (the registry's own list: read, never change)."""
        return self._names

    def in_state(self, state: str) -> Set[str]:
        """The names of the hosts in ``state`` (the registry's own set: read, never change)."""
        return self._by_state[state]

    def _move(self, host: Host, state: HostState) -> None:
        """Put ``host`` in ``state``, keeping the names per state: every change goes here."""
        self._by_state[host.state.value].discard(host.name)
        self._by_state[state.value].add(host.name)
        host.state = state

    def _changed(self, name: str) -> None:
        """A host came, went or changed address: the next ``generation``."""
        self.generation += 1
        self._changes.append((self.generation, name))

    def changed_since(self, generation: int) -> list[str] | None:
        """The names of the hosts that came, went or changed address after ``generation``
        (None: the registry no longer knows: more changes than it keeps, or a restore)."""
        changes = self._changes
        if generation == self.generation:
            return []
        if not changes or changes[0][0] > generation + 1:
            return None
        return [name for at, name in changes if at > generation]

    def _add(self, host: Host) -> None:
        self._changed(host.name)
        self.hosts[host.name] = host
        insort(self._names, host.name)
        self._by_state[host.state.value].add(host.name)

    def config_for(self, name: str) -> HostConfig:
        return self.host_config.get(name, _DEFAULT_HOST)

    def host_json(self, host: Host) -> dict[str, Any]:
        """The API shape of a host, with its dependencies, flapping and recovery."""
        body = host.to_json(self.config_for(host.name))
        body["parents"] = list(self.dependencies.parents_of(host.name))
        body["flapping"] = self.flapping(host.name)
        needed = self.recover_after(host.name)
        body["recovering"] = {"heartbeats": host.good_heartbeats, "needed": needed} \
            if host.good_heartbeats and host.state in _SILENT else None
        return body

    def flapping(self, name: str) -> bool:
        return self.flaps is not None and self.flaps.flapping(name, HOST_SUBJECT)

    def recover_after(self, name: str) -> int:
        """Heartbeats in a row a DOWN or UNREACHABLE host needs to be UP again."""
        return self.config_for(name).recover_after or 1

    def take_dirty(self) -> tuple[list[Host], list[Host]]:
        """Hosts changed since the last call, for the store to write: those changed in any
        way, and those only a steady heartbeat changed (only :data:`BEAT_FIELDS` moved, a
        row of 16 columns written as 5: half the store's time at 5,000 heartbeats a
        second)."""
        hosts = self.hosts
        changed = [hosts[name] for name in self._dirty if name in hosts]
        beaten = [hosts[name] for name in self._beats.difference(self._dirty) if name in hosts]
        self._dirty.clear()
        self._beats.clear()
        return changed, beaten

    def take_commands_dirty(self) -> list[Host]:
        """Hosts whose queued commands changed since the last call (queued, sent, done)."""
        dirty = [self.hosts[name] for name in self._commands_dirty if name in self.hosts]
        self._commands_dirty.clear()
        return dirty

    def restore(self, hosts: Iterable[Host], now: float) -> None:
        """Load hosts from the store after a restart.

        A host that was UP gets a fresh ``interval + grace`` from ``now``: the
        server heard nothing while it was stopped, which says nothing about the host.
        Command ids go on past those of the restored queued commands.
        """
        hosts = list(hosts)
        table = self.hosts
        names = {state: self._by_state[state.value] for state in HostState}
        # UNREACHABLE too: if its parents are back, it is DOWN after this.
        live = {HostState.UP, HostState.UNREACHABLE}
        start = now + self.grace
        for host in hosts:  # 100,000 at a start-up: no per-host lookup that can be hoisted
            name = host.name
            if host.state in live:
                fresh = start + self._interval(host)
                host.expected_by = max(host.expected_by or 0.0, fresh)
            old = table.get(name)
            if old is not None:
                names[old.state].discard(name)
            table[name] = host
            names[host.state].add(name)
        self._names = sorted(table)
        self.generation += 1
        self.replaced += 1
        self._changes.clear()
        self._ids_past(host.pending for host in hosts)

    def _ids_past(self, queues: Iterable[Iterable[str]]) -> None:
        """Command ids from now on go on past the numbers ending ``queues``' ids."""
        last_id = 0
        for queue in queues:
            for cmd_id in queue:
                number = cmd_id.rpartition("-")[2]
                last_id = max(last_id, int(number) if number.isdigit() else 0)
        if last_id:
            self._command_ids = itertools.count(max(last_id + 1, next(self._command_ids)))

    def take_over_commands(self, pending: Mapping[str, dict[str, PendingCommand]]) -> int:
        """Leading now: the commands queued in the store (by the last leader) replace each
        host's queue, and go out with the next ACKs; returns how many there are."""
        for host in self.hosts.values():
            host.pending = dict(pending.get(host.name, {}))
        self._commands_dirty.clear()
        self._ids_past(pending.values())
        self.dispatching = True
        self.replaced += 1
        return sum(len(queue) for queue in pending.values())

    def _interval(self, host: Host) -> float:
        override = self.host_config.get(host.name, _DEFAULT_HOST).interval
        return override or host.interval or self.default_interval

    def _host(self, name: str, now: float, events: list[Event]) -> Host:
        host = self.hosts.get(name)
        if host is None:
            host = Host(name, first_seen=now, since=now)
            self._add(host)
            events.append(Event(HOST_NEW, name, now, {}))
        self._dirty.add(name)
        return host

    def apply(self, message: dict[str, Any], source: tuple[str, int], now: float,
              signed: Signed | None = None, size: int = 0) -> Outcome:
        """Apply one decoded message from ``source`` (ip, port) received at ``now``.

        ``signed`` says how it was signed (already verified), for the host's record;
        ``size`` is the length of a PLG's JSON text, charged to its plugins.
        """
        handler = self._handlers.get(message["ID"])
        if handler is None:
            return _NOTHING
        name = message["name"]
        host = self.hosts.get(name)
        if handler is Registry._plugins or host is None:
            refused = self._refusal(message, size, now)  # else nothing to bound
            if refused is not None:
                return Outcome([], [], refused)
        events: list[Event] = []
        if host is None:
            host = self._host(name, now, events)
        elif handler is not Registry._heartbeat:
            self._dirty.add(name)  # a heartbeat says itself what it changed
        if handler is Registry._heartbeat:
            replies = self._heartbeat(host, message, source, now, events)
        elif handler is Registry._plugins:
            replies = self._plugins(host, message, source, now, events, size=size)
        else:
            replies = handler(self, host, message, source, now, events)
            host.latest = (now, latest_message(message))
        if "version" in message and message["version"] != host.version:
            host.version = message["version"]
            self._dirty.add(name)
        if signed is None:
            host.signed, host.key_id = False, None
        else:
            host.signed, host.key_id = True, signed.key_id
        return Outcome(events, replies)

    def _refusal(self, message: dict[str, Any], size: int, now: float) -> str | None:
        """Why a message of ``size`` bytes would take the registry past a bound."""
        name = message["name"]
        host = self.hosts.get(name)
        if message["ID"] == "PLG":
            plugins = message["plugins"]
            if self.max_plugins is not None:
                known = host.plugins if host is not None else {}
                if len(known) + len(plugins) > self.max_plugins and len(
                        known.keys() | plugins.keys()) > self.max_plugins:
                    return "max_plugins"
            limit = self.max_plugin_bytes
            if (limit is not None and self.plugin_bytes + size > limit
                    and name not in self.host_config):
                after = self.plugin_bytes_after(host, plugins, size)
                if after > limit and after > self.plugin_bytes:
                    return "max_plugin_bytes"
        if host is None and self.admission is not None and name not in self.host_config:
            return self.admission.admit(len(self.hosts), now)
        return None

    def bounds_json(self) -> dict[str, Any]:
        """The bounds' tables for ``/api/0/status`` (only the bounds that are set)."""
        body: dict[str, Any] = {}
        if self.admission is not None:
            body["admission"] = self.admission.to_json()
        if self.max_plugin_bytes is not None:
            body["plugin_data"] = {"bytes": self.plugin_bytes,
                                   "max_plugin_bytes": self.max_plugin_bytes}
        return body

    def plugin_bytes_after(self, host: Host | None, plugins: dict[str, Any], size: int) -> int:
        """``plugin_bytes`` once a PLG of ``size`` bytes has replaced ``plugins`` of ``host``.

        A PLG's text stays charged until every plugin it set has been replaced, so
        the count never falls below the data actually held.
        """
        freed = _released(host.plugins, plugins)[0] if host is not None else 0
        return self.plugin_bytes - freed + size

    def _heartbeat(
        self, host: Host, message: dict[str, Any], source: tuple[str, int], now: float,
        events: list[Event],
    ) -> list[dict[str, Any]]:
        addr, port = source
        steady = True
        if addr != host.addr:
            events.append(Event(HOST_ADDRESS, host.name, now, {"addr": addr, "old": host.addr}))
            host.addr = addr
            self._changed(host.name)
            steady = False
        host.port = port
        if "interval" in message:
            host.interval = float(message["interval"])
        if "seq" in message:
            host.seq = message["seq"]
        interval = self._interval(host)
        previous_seen = host.last_seen if host.expected_by is not None else None
        host.last_seen = now
        host.expected_by = now + interval + self.grace
        previous = host.state
        if previous is HostState.UP:
            self._flap(host, HostState.UP, now, events)
        elif previous in _SILENT and not self._recovered(host, previous_seen, interval, now):
            self._flap(host, previous, now, events)
        else:
            steady = False
            data: dict[str, Any] = {"previous": previous.value, "addr": addr}
            if previous is HostState.DOWN and host.since is not None:
                data["down_for"] = now - host.since
                data["down_reason"] = host.down_reason
            self._move(host, HostState.UP)
            host.since = now
            host.down_reason = None
            host.good_heartbeats = 0
            if self._flap(host, HostState.UP, now, events, previous):
                data["flapping"] = True
            events.append(Event(HOST_UP, host.name, now, data))
            self._reawaken(host, now)
        if "rtt" in message:
            host.rtt = float(message["rtt"])  # alerting reads it from the message event
        (self._beats if steady else self._dirty).add(host.name)
        ack = {"ID": "ACK", "server_ts": now}
        if "seq" in message:
            ack["seq"] = message["seq"]
        if "ts" in message:
            ack["ts"] = message["ts"]
        if not host.pending:
            return [ack]
        return [ack, *self._due_commands(host, now, events)]

    def _due_commands(self, host: Host, now: float, events: list[Event]) -> list[dict[str, Any]]:
        if not host.pending or not self.dispatching:
            return []
        self._commands_dirty.add(host.name)
        replies: list[dict[str, Any]] = []
        budget = ANSWER_BYTES
        for command in list(host.pending.values()):
            if command.attempts >= self.command_attempts:
                del host.pending[command.cmd_id]
                result = {"cmd_id": command.cmd_id, "status": "failed", "kind": command.kind,
                          "attempts": command.attempts, "detail": "no RES after its resends",
                          **command.payload}
                host.add_result({"ts": now, **result})
                events.append(Event(HOST_RESULT, host.name, now, result))
                continue
            reply = {"ID": command.kind, "cmd_id": command.cmd_id, **command.payload}
            budget -= len(json_bytes(reply))
            if replies and budget < 0:
                break  # the rest go with the next heartbeats, oldest first
            command.attempts += 1
            replies.append(reply)
        return replies

    def _boot(
        self, host: Host, message: dict[str, Any], source: tuple[str, int], now: float,
        events: list[Event],
    ) -> list[dict[str, Any]]:
        host.boot_time = float(message.get("boot_time", now))
        events.append(Event(HOST_BOOT, host.name, now,
                            {"boot_time": host.boot_time, "addr": source[0]}))
        return []

    def _shutdown(
        self, host: Host, message: dict[str, Any], source: tuple[str, int], now: float,
        events: list[Event],
    ) -> list[dict[str, Any]]:
        previous = host.state
        host.down_reason = "shutdown"
        host.expected_by = None
        host.good_heartbeats = 0
        if previous is not HostState.DOWN:
            self._move(host, HostState.DOWN)
            host.since = now
            data: dict[str, Any] = {"reason": "shutdown", "previous": previous.value}
            self.cascade_left = CASCADE
            self._fall(host, HostState.DOWN, data, now, events)
        return []

    def _text(
        self, host: Host, message: dict[str, Any], source: tuple[str, int], now: float,
        events: list[Event],
    ) -> list[dict[str, Any]]:
        level = message.get("level", "info")
        events.append(Event(HOST_MESSAGE, host.name, now, {"text": message["text"],
                                                            "level": level}))
        return []

    def _plugins(
        self, host: Host, message: dict[str, Any], source: tuple[str, int], now: float,
        events: list[Event], *, size: int = 0,
    ) -> list[dict[str, Any]]:
        """Keep the latest sample of each plugin; ``size`` (the PLG's text) is charged
        to the new samples together and what the replaced samples held is given back."""
        plugins: dict[str, Any] = message["plugins"]
        samples = host.plugins
        sample = PluginSample(now, PlgCharge(size, len(plugins)) if size else None)
        last = next(iter(samples.values())).charge if samples else None
        if last is not None and last.holders == len(samples) and samples.keys() == plugins.keys():
            # What nearly every PLG is: the plugins of the host's last one, which set them all.
            freed, last.holders = last.size, 0
            samples.update(dict.fromkeys(samples, sample))  # the keys it has are kept
        else:
            freed, lost = _released(samples, plugins)
            for old, holders in lost.items():
                old.holders -= holders
            for name in plugins:  # one sample for all: never changed, only replaced
                if name in samples:  # the key it has is kept, interned when it came
                    samples[name] = sample
                else:
                    samples[intern(name)] = sample  # one "cpu_monitor" per fleet
        if size or freed:
            host.plugin_bytes += size - freed
            self.plugin_bytes += size - freed
        events.append(Event(HOST_PLUGINS, host.name, now, {"plugins": plugins}))
        return []

    def _result(
        self, host: Host, message: dict[str, Any], source: tuple[str, int], now: float,
        events: list[Event],
    ) -> list[dict[str, Any]]:
        cmd_id = str(message["cmd_id"])
        command = host.pending.pop(cmd_id, None)
        if command is not None:
            self._commands_dirty.add(host.name)
        result: dict[str, Any] = {
            "cmd_id": cmd_id,
            "status": "done" if command is not None else "unsolicited",
            "rc": message["rc"],
            "output": message.get("output", ""),
        }
        if command is not None:
            result["kind"] = command.kind
            result.update(command.payload)
        host.add_result({"ts": now, **result})
        events.append(Event(HOST_RESULT, host.name, now, result))
        return []

    _handlers = {
        "HTB": _heartbeat,
        "BOOT": _boot,
        "SHUT": _shutdown,
        "MSG": _text,
        "PLG": _plugins,
        "RES": _result,
    }

    def overdue(self, now: float) -> list[str]:
        """The hosts :meth:`expire` would look at now: UP or UNREACHABLE, past their
        deadline. One walk of the table, and nothing changed."""
        live = (HostState.UP, HostState.UNREACHABLE)
        return [host.name for host in self.hosts.values() if host.expected_by is not None
                and now > host.expected_by and host.state in live]

    def expire(self, now: float, names: Iterable[str] | None = None) -> list[Event]:
        """Hosts overdue past ``interval + grace``: DOWN, or UNREACHABLE behind a down
        parent; one whose parent may be down too waits for the parent's own deadline.

        ``names`` looks at those hosts only (some of :meth:`overdue`, each checked
        again: a heartbeat may have come since); None, at every host."""
        events: list[Event] = []
        self.cascade_left = CASCADE
        table = self.hosts
        hosts = list(table.values()) if names is None else [
            host for host in map(table.get, names) if host is not None]
        for host in hosts:
            if host.expected_by is None or now <= host.expected_by or host.state not in (
                    HostState.UP, HostState.UNREACHABLE):
                continue
            verdict = self._verdict(host)
            if verdict == dependencies.WAIT:
                continue
            overdue = now - (host.last_seen or now)
            data = {"previous": host.state.value, "last_seen": host.last_seen,
                    "silent_for": overdue}
            self._dirty.add(host.name)
            if verdict == dependencies.UNREACHABLE:
                if host.state is HostState.UNREACHABLE:
                    host.expected_by = None  # its parents are still down: nothing new
                    continue
                self._unreachable(host, data, now, events)
            else:
                self._move(host, HostState.DOWN)
                host.down_reason = "timeout"
                host.since = now
                host.expected_by = None
                self._fall(host, HostState.DOWN, {"reason": "timeout", **data}, now, events)
        return events

    # Dependencies, recovery and flapping
    def _verdict(self, host: Host) -> str:
        parents = []
        for name in self.dependencies.parents_of(host.name):
            parent = self.hosts.get(name)
            parents.append(ParentView("UNKNOWN", None) if parent is None
                           else ParentView(parent.state.value, parent.last_seen))
        return dependencies.verdict(host.last_seen, self._interval(host), parents)

    def _fall(self, host: Host, state: HostState, data: dict[str, Any], now: float,
              events: list[Event]) -> None:
        """``host`` is now DOWN or UNREACHABLE: an evaluation for flap detection, and its
        event listing the hosts behind it that fall with it (their events follow)."""
        if self._flap(host, state, now, events, HostState(data["previous"])):
            data["flapping"] = True
        behind: list[Event] = []
        fallen, more = self._cascade(host, now, behind)
        if fallen:
            data["unreachable"] = fallen
        if more:
            data["unreachable_more"] = True
        kind = HOST_DOWN if state is HostState.DOWN else HOST_UNREACHABLE
        events.append(Event(kind, host.name, now, data))
        events.extend(behind)

    def _unreachable(self, host: Host, data: dict[str, Any], now: float,
                     events: list[Event]) -> None:
        self._move(host, HostState.UNREACHABLE)
        host.since = now
        host.expected_by = None  # until a parent is back (_reawaken)
        host.down_reason = None
        host.good_heartbeats = 0
        data["parents"] = list(self.dependencies.parents_of(host.name))
        self._fall(host, HostState.UNREACHABLE, data, now, events)

    def _cascade(self, parent: Host, now: float, events: list[Event]) -> tuple[list[str], bool]:
        """Children of ``parent`` that have missed a heartbeat and have no parent up:
        UNREACHABLE now, not at their own deadline. Their names, nearest first, and
        whether the cascade stopped with :attr:`cascade_left` spent: the rest fall at
        their own deadlines, a monitor's slice at a time (a core router falling with
        100,000 hosts behind it held the reactor for seconds in one go)."""
        fallen: list[str] = []
        more = False
        for name in self.dependencies.children_of(parent.name):
            child = self.hosts.get(name)
            if child is None or child.state is not HostState.UP or child.last_seen is None \
                    or now <= child.last_seen + self._interval(child) \
                    or self._verdict(child) != dependencies.UNREACHABLE:
                continue
            if self.cascade_left <= 0:
                more = True
                break
            self.cascade_left -= 1
            self._dirty.add(name)
            before = len(events)
            self._unreachable(child, {"previous": "UP", "last_seen": child.last_seen,
                                      "silent_for": now - child.last_seen}, now, events)
            fallen.append(name)
            fallen.extend(events[before].data.get("unreachable", []))
            more = more or events[before].data.get("unreachable_more", False)
        return fallen, more

    def unreachable_behind(self, name: str) -> list[str]:
        """The hosts behind ``name`` that are UNREACHABLE now, nearest first."""
        return [child for child in self.dependencies.descendants(name)
                if (host := self.hosts.get(child)) is not None
                and host.state is HostState.UNREACHABLE]

    def _reawaken(self, host: Host, now: float) -> None:
        """``host`` is UP again: the hosts behind it get a fresh deadline, past which
        one still silent is DOWN (the way to it is open again)."""
        for name in self.dependencies.descendants(host.name):
            child = self.hosts.get(name)
            if child is not None and child.state is HostState.UNREACHABLE \
                    and child.expected_by is None:
                child.expected_by = now + self._interval(child) + self.grace
                self._dirty.add(name)

    def _recovered(self, host: Host, previous_seen: float | None, interval: float,
                   now: float) -> bool:
        """One more heartbeat of a DOWN or UNREACHABLE host: enough in a row to be UP?"""
        needed = self.recover_after(host.name)
        if needed <= 1:
            return True
        in_a_row = previous_seen is not None and host.good_heartbeats > 0 \
            and now - previous_seen <= interval + self.grace
        host.good_heartbeats = host.good_heartbeats + 1 if in_a_row else 1
        return host.good_heartbeats >= needed

    def _flap(self, host: Host, state: HostState, now: float, events: list[Event],
              previous: HostState | None = None) -> bool:
        """Record one evaluation of ``host``'s state; whether it is flapping now."""
        flaps = self.flaps
        if flaps is None:
            return False
        if previous is None or previous is HostState.UNKNOWN:
            if not flaps.tracks(host.name):
                return False  # no change and no history: record() keeps none, none flaps
            previous = state  # a first sight is no change of state
        change = flaps.record(host.name, HOST_SUBJECT, state.value, previous.value, now)
        if change is not None:
            events.append(Event(HOST_FLAPPING, host.name, now, change.to_json()))
        return flaps.flapping(host.name, HOST_SUBJECT)

    def queue_command(
        self, name: str, kind: str, payload: dict[str, Any], now: float, by: str | None = None
    ) -> tuple[PendingCommand, Event]:
        """Queue a CMD (``payload`` has ``cmd``, ``args``) or UPD for the host's next HTB."""
        command = self.new_command(name, kind, payload, now, by)
        return command, self.add_command(name, command)

    def new_command(
        self, name: str, kind: str, payload: dict[str, Any], now: float, by: str | None = None
    ) -> PendingCommand:
        """A command for ``name`` not queued yet (the API commits it first): KeyError for
        no such host, QueueFull when the host has ``MAX_QUEUED_COMMANDS`` waiting."""
        host = self.hosts[name]
        if len(host.pending) >= MAX_QUEUED_COMMANDS:
            raise QueueFull(f"{name} has {len(host.pending)} commands waiting for its "
                            f"next heartbeats (at most {MAX_QUEUED_COMMANDS})")
        cmd_id = f"{int(now):x}-{next(self._command_ids)}"
        return PendingCommand(cmd_id, kind, dict(payload), now, by)

    def add_command(self, name: str, command: PendingCommand) -> Event:
        """Queue ``command`` (from :meth:`new_command`) for the host's next HTB."""
        self.hosts[name].pending[command.cmd_id] = command
        self._commands_dirty.add(name)
        return Event(HOST_COMMAND, name, command.queued, command.to_json())

    def remove(self, name: str, now: float, by: str | None = None) -> Event | None:
        """Forget a host (it comes back as new if it sends again)."""
        host = self.hosts.pop(name, None)
        if host is None:
            return None
        del self._names[bisect_left(self._names, name)]
        self._changed(name)
        self._by_state[host.state.value].discard(name)
        self.plugin_bytes -= host.plugin_bytes
        if self.flaps is not None:
            self.flaps.forget(name)
        self._dirty.discard(name)
        self._beats.discard(name)
        self._commands_dirty.discard(name)
        return Event(HOST_REMOVED, name, now, {"by": by})

    def counts(self) -> dict[str, int]:
        """Hosts per state (every state, zero or not)."""
        return {state: len(names) for state, names in self._by_state.items()}
