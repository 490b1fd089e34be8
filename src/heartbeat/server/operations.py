"""Operations at the edge: maintenance windows, silences and acknowledgements kept and timed.

The pure books (maintenance.py, silences.py, acks.py, suppression.py,
flapping.py) decide; the :class:`OperationsService` owns what they need from the
outside world:

- **changes** made through the API: checked by the books' own parsers, kept in
  the store and journaled as events (``maintenance.created``, ``silence.ended``,
  ``ack.added``...);
- **time**: one timer at the next moment a window opens or closes or a silence
  starts or expires; then it journals what changed (``maintenance.started``,
  ``silence.ended``...) and publishes a ``problem.still`` event for every problem
  (a host DOWN, an alert, a cron job late or failed) whose notices were held back,
  that nothing holds any more and that is still there;
- **the bus**: an acknowledgement ends when its problem changes level; a removed
  host's acknowledgements and held problems go with it;
- **the store**: windows, silences, acknowledgements, held problems and flap
  histories survive a restart (tables of schema version 2, migrations.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from heartbeat.config.loader import ConfigError
from heartbeat.events import HOST_DOWN, HOST_UNREACHABLE, HOST_UP, PROBLEM_STILL, Event
from heartbeat.server.acks import HOST as HOST_TARGET
from heartbeat.server.acks import Acknowledgement
from heartbeat.server.flapping import FlapDetector, FlapRow
from heartbeat.server.jobs import JobBook
from heartbeat.server.maintenance import MaintenanceWindow, is_glob, parse_window
from heartbeat.server.registry import HostState, Registry
from heartbeat.server.silences import Silence, parse_silence
from heartbeat.server.store import StoreService
from heartbeat.server.suppression import DOWN_KEY, HeldProblem, Suppression, job_name
from heartbeat.server.tables import (
    ACKNOWLEDGEMENTS,
    FLAP_STATES,
    HELD_PROBLEMS,
    MAINTENANCE_WINDOWS,
    OPERATION_IDS,
    SILENCES,
    Table,
    Tables,
    Write,
)
from heartbeat.server.thresholds.engine import AlertState, ThresholdEngine
from heartbeat.text import json_bytes

__all__ = [
    "ACK_ADDED",
    "ACK_REMOVED",
    "MAINTENANCE_CREATED",
    "MAINTENANCE_DELETED",
    "MAINTENANCE_ENDED",
    "MAINTENANCE_STARTED",
    "MAINTENANCE_UPDATED",
    "SILENCE_CREATED",
    "SILENCE_ENDED",
    "SILENCE_STARTED",
    "OperationsService",
    "StoredOperations",
    "load_operations",
]

log = Logger()

MAINTENANCE_CREATED: Final = "maintenance.created"
MAINTENANCE_UPDATED: Final = "maintenance.updated"
MAINTENANCE_DELETED: Final = "maintenance.deleted"
MAINTENANCE_STARTED: Final = "maintenance.started"
MAINTENANCE_ENDED: Final = "maintenance.ended"
SILENCE_CREATED: Final = "silence.created"
SILENCE_STARTED: Final = "silence.started"
SILENCE_ENDED: Final = "silence.ended"  # data["ended_by"]: who ended it early, else null
ACK_ADDED: Final = "ack.added"
ACK_REMOVED: Final = "ack.removed"  # data["reason"]: api, level_changed, host_removed
SHARED_TABLES: Final = frozenset({MAINTENANCE_WINDOWS.name, SILENCES.name, ACKNOWLEDGEMENTS.name,
                                  "*"})
"""What the leader changed that a follower reads again ("*": anything, after the shared
store's listener reconnected)."""
MAX_WAIT: Final = 3600.0
"""The timer looks again at least this often (s), so a clock step cannot strand it."""
RELEASE_SLICE: Final = 1000
"""Held problems looked at in one turn of the reactor when windows or silences end (about
30 ms: each released one is a ``problem.still`` event); the rest follow in the next turns."""
_STATES: Final = {HOST_DOWN: HostState.DOWN.value, HOST_UNREACHABLE: HostState.UNREACHABLE.value,
                  HOST_UP: HostState.UP.value}


@dataclass
class StoredOperations:
    """What the store held at start-up (for :meth:`OperationsService.restore`)."""

    windows: list[tuple[str, dict[str, Any], str | None, float]] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    acks: list[Acknowledgement] = field(default_factory=list)
    held: list[HeldProblem] = field(default_factory=list)
    flaps: list[tuple[str, str, list[str], bool, float | None]] = field(default_factory=list)
    last_ids: dict[str, int] = field(default_factory=dict)


def load_operations(tables: Tables) -> StoredOperations:
    """Every stored window, silence, acknowledgement, held problem and flap history."""
    found = StoredOperations()
    for window_id, spec, author, created in tables.rows(MAINTENANCE_WINDOWS):
        found.windows.append((window_id, json.loads(spec), author, created))
    for row in tables.rows(SILENCES):
        found.silences.append(Silence(*row))
    for row in tables.rows(ACKNOWLEDGEMENTS):
        found.acks.append(Acknowledgement(*row))
    for row in tables.rows(HELD_PROBLEMS):
        found.held.append(HeldProblem(*row))
    for host, subject, history, flapping, since in tables.rows(FLAP_STATES):
        found.flaps.append((host, subject, json.loads(history), bool(flapping), since))
    found.last_ids = dict(tables.rows(OPERATION_IDS))
    return found


class OperationsService(Service):
    """Keeps, times and journals maintenance windows, silences and acknowledgements."""

    name = "operations"

    def __init__(
        self,
        suppression: Suppression,
        publish: Callable[[Event], None],
        store: StoreService,
        clock: IReactorTime,
        *,
        registry: Registry,
        engine: ThresholdEngine | None,
        flaps: FlapDetector | None = None,
        jobs: JobBook | None = None,
        default_zone: str = "UTC",
        retention: float = 7 * 86400.0,
    ) -> None:
        self.suppression = suppression
        self.calendar = suppression.calendar
        self.silences = suppression.silences
        self.acks = suppression.acks
        self.registry = registry
        self.engine = engine
        self.publish = publish
        self.store = store
        self.clock = clock
        self.flaps = flaps
        self.jobs = jobs
        """The cron jobs (their levels: is a held job problem still there?)."""
        self.default_zone = default_zone
        self.retention = retention
        """Silences that expired longer ago than this are forgotten."""
        self._open: dict[str, MaintenanceWindow] = {}
        self._active: set[str] = set()
        self._call: IDelayedCall | None = None
        self._release_call: IDelayedCall | None = None
        self._writes: list[Write] = []
        self.released = 0
        self.leading = True
        """Whether this server takes changes: always alone; with servers sharing a store,
        only while it leads (:meth:`lead`)."""

    # Start-up
    def restore(self, stored: StoredOperations, *, replace: bool = False) -> None:
        """Lay what the store kept over the config's windows (before the service starts;
        ``replace``: instead of the windows, silences and acknowledgements held now)."""
        self._restore_books(stored, replace=replace)
        self.suppression.restore(stored.held)
        if self.flaps is not None:
            self.flaps.restore(stored.flaps)
            self.flaps.take_dirty()

    def _restore_books(self, stored: StoredOperations, *, replace: bool) -> None:
        """The windows, silences and acknowledgements the store kept."""
        if replace:
            for old in [w for w in self.calendar if w.source == "api"]:
                self.calendar.remove(old.id)
        for window_id, spec, author, created in stored.windows:
            try:
                window = parse_window(spec, key=f"maintenance {window_id}", source="store",
                                      default_zone=self.default_zone, window_id=window_id,
                                      author=author, created=created, origin="api")
            except ConfigError as e:
                log.error("operations: stored maintenance window {id} cannot be used and is "
                          "left out: {error}", id=window_id, error=str(e))
                continue
            self.calendar.put(window)
        self.calendar.restore([], stored.last_ids.get("maintenance", 0))
        self.silences.restore(stored.silences, stored.last_ids.get("silence", 0),
                              replace=replace)
        self.acks.restore(stored.acks, replace=replace)

    def attach(self) -> None:
        self.store.add_source(self._take_writes)

    # Servers sharing a store (docs/HA.md)
    def lead(self, leading: bool) -> Deferred[None] | None:
        """Only the leader takes changes (the API answers 409 not_leader elsewhere);
        taking over, it first reads the windows, silences and acknowledgements the last
        leader kept, instead of those it loaded."""
        self.leading = False
        if not leading:
            return None

        def take(stored: StoredOperations) -> None:
            self.restore(stored, replace=True)
            self.leading = True
            log.info("operations: leading with {windows} window(s), {silences} silence(s), "
                     "{acks} acknowledgement(s) from the store", windows=len(self.calendar),
                     silences=len(self.silences), acks=len(self.acks))
            self._changed()

        return self.store.read(load_operations).addCallback(take)

    def follow(self, tables: set[str]) -> Deferred[None] | None:
        """Another server changed ``tables`` of the shared store: a follower that heard the
        leader change a window, a silence or an acknowledgement reads them again and acts
        on them at once, so every server lists and applies the same (docs/HA.md)."""
        if self.leading or not tables & SHARED_TABLES:
            return None

        def take(stored: StoredOperations) -> None:
            if self.leading:
                return  # it took over meanwhile, and read them then
            self._restore_books(stored, replace=True)
            self._changed()

        d = self.store.read(load_operations).addCallback(take)
        return d.addErrback(lambda f: log.failure(
            "operations: reading what the leader changed failed (read again at the next "
            "change or at a takeover)", f))

    # The timer
    def startService(self) -> None:
        super().startService()
        now = self.clock.seconds()
        self._open = {w.id: w for w in self.calendar.open(now)}
        self._active = {s.id for s in self.silences.active(now)}
        self.check()

    def stopService(self) -> None:
        super().stopService()
        for call in (self._call, self._release_call):
            if call is not None and call.active():
                call.cancel()
        self._call = self._release_call = None

    def check(self) -> None:
        """Journal what opened, closed, started or ended; release held problems; re-arm."""
        self.suppression.walk_again()
        try:
            self._check(self.clock.seconds())
        except Exception:
            log.failure("operations: checking windows and silences failed; trying again later")
        if self.running:
            self._arm()

    def _release(self) -> None:
        """The next :data:`RELEASE_SLICE` of a walk of the held problems."""
        self._release_call = None
        now = self.clock.seconds()
        try:
            for held in self.suppression.released(now, self._current, RELEASE_SLICE):
                self.released += 1
                self._event(PROBLEM_STILL, held.host, self._still(held), now)
        except Exception:
            log.failure("operations: releasing held problems failed; trying again later")
            return
        if self.running and self.suppression.releasing and self._release_call is None:
            self._release_call = self.clock.callLater(0, self._release)

    def _check(self, now: float) -> None:
        open_now = {w.id: w for w in self.calendar.open(now)}
        for window_id in sorted(open_now.keys() - self._open.keys()):
            window = open_now[window_id]
            self._window_event(MAINTENANCE_STARTED, window, window.to_json(now), now)
        for window_id in sorted(self._open.keys() - open_now.keys()):
            closed = self.calendar.get(window_id) or self._open[window_id]  # deleted: as it was
            self._window_event(MAINTENANCE_ENDED, closed, closed.to_json(now), now)
        self._open = open_now
        active = {s.id: s for s in self.silences.active(now)}
        for silence_id in sorted(active.keys() - self._active, key=_number):
            silence = active[silence_id]
            self._event(SILENCE_STARTED, _silence_host(silence), silence.to_json(now), now)
        for silence_id in sorted(self._active - active.keys(), key=_number):
            ended = self.silences.get(silence_id)
            if ended is not None:
                self._event(SILENCE_ENDED, _silence_host(ended), ended.to_json(now), now)
        self._active = set(active)
        if self._release_call is None:
            self._release()
        for silence_id in self.silences.purge(now - self.retention):
            self._writes.append(_delete(SILENCES, silence_id))

    def _arm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        now = self.clock.seconds()
        changes = [t for t in (self.calendar.next_change(now), self.silences.next_change(now))
                   if t is not None]
        delay = min([t - now for t in changes] + [MAX_WAIT])
        self._call = self.clock.callLater(max(0.0, delay), self.check)

    def _current(self, host: str, key: str) -> str | None:
        """The level of a held problem now (None: gone, or no longer notified)."""
        if key == DOWN_KEY:
            found = self.registry.get(host)
            return "DOWN" if found is not None and found.state is HostState.DOWN else None
        name = job_name(key)
        if name is not None:
            job = None if self.jobs is None else self.jobs.jobs.get(name)
            if job is None or job.spec.host != host or job.level == "OK":
                return None
            return job.level
        state = self._alert_state(host, key)
        return None if state is None else state.level.value

    def _still(self, held: HeldProblem) -> dict[str, Any]:
        data: dict[str, Any] = {**held.to_json(), "held_since": held.since}
        del data["host"]
        if held.key == DOWN_KEY:
            found = self.registry.get(held.host)
            data["since"] = found.since if found is not None else held.since
            behind = self.registry.unreachable_behind(held.host)
            if behind:  # as on the DOWN event: only when there are some
                data["unreachable"] = behind
        elif (name := job_name(held.key)) is not None:
            job = None if self.jobs is None else self.jobs.jobs.get(name)
            if job is not None:
                data.update(job=name, problem=job.reason, last_success=job.last_success)
        else:
            state = self._alert_state(held.host, held.key)
            if state is not None:
                data.update(since=state.since, message=state.message, metric_path=held.key)
        return data

    def _alert_state(self, host: str, path: str) -> AlertState | None:
        if self.engine is None:
            return None
        return next((s for s in self.engine.states(host) if s.metric_path == path), None)

    def annotations(self, host: str, key: str = DOWN_KEY) -> dict[str, Any]:
        """What covers ``host``'s problem ``key`` now (Suppression.annotations)."""
        return self.suppression.annotations(host, key, self.clock.seconds())

    def in_maintenance(self, host: str) -> bool:
        """Whether an open maintenance window covers ``host`` now: the ``in_maintenance``
        of :meth:`annotations`, alone (what the public status pages may say)."""
        return self.calendar.in_maintenance(host, self.clock.seconds())

    def in_maintenance_of(self, hosts: Iterable[str]) -> set[str]:
        """Those of ``hosts`` :meth:`in_maintenance` says are covered; nothing to ask per
        host while no window is open (a status page of 100,000 hosts)."""
        now = self.clock.seconds()
        calendar = self.calendar
        if not calendar.open(now):
            return set()
        return {host for host in hosts if calendar.in_maintenance(host, now)}

    # Changes through the API
    def add_window(self, raw: Mapping[str, Any], by: str | None) -> MaintenanceWindow:
        """Check and keep a new window (ConfigError names the field)."""
        now = self.clock.seconds()
        window = parse_window(raw, key="", source="body", default_zone=self.default_zone,
                              window_id="new", author=by, created=now, origin="api")
        window = replace(window, id=self.calendar.next_id())
        self._keep_window(window, MAINTENANCE_CREATED, by, now)
        return window

    def replace_window(self, window_id: str, raw: Mapping[str, Any],
                       by: str | None) -> MaintenanceWindow:
        """Check ``raw`` as the new content of window ``window_id`` (made through the API)."""
        now = self.clock.seconds()
        old = self.calendar.get(window_id)
        assert old is not None and old.source == "api"
        window = parse_window(raw, key="", source="body", default_zone=self.default_zone,
                              window_id=window_id, author=old.author, created=old.created,
                              origin="api")
        self._keep_window(window, MAINTENANCE_UPDATED, by, now)
        return window

    def _keep_window(self, window: MaintenanceWindow, kind: str, by: str | None,
                     now: float) -> None:
        self.calendar.put(window)
        spec = json_bytes(window.spec).decode()
        row = (window.id, spec, window.author, window.created)
        self._writes.append(lambda tables: tables.put(MAINTENANCE_WINDOWS, [row]))
        self._writes.append(_last_id("maintenance", int(window.id)))
        self._window_event(kind, window, {**window.to_json(now), "by": by}, now)
        log.info("operations: {what} {id} by {user}", what=kind, id=window.id, user=by)
        self._changed()

    def delete_window(self, window_id: str, by: str | None) -> MaintenanceWindow | None:
        now = self.clock.seconds()
        window = self.calendar.remove(window_id)
        if window is None:
            return None
        self._writes.append(_delete(MAINTENANCE_WINDOWS, window_id))
        self._window_event(MAINTENANCE_DELETED, window, {**window.to_json(now), "by": by}, now)
        log.info("operations: maintenance window {id} deleted by {user}", id=window_id, user=by)
        self._changed()
        return window

    def add_silence(self, raw: Mapping[str, Any], by: str | None) -> Silence:
        now = self.clock.seconds()
        silence = parse_silence(raw, source="body", default_zone=self.default_zone, now=now,
                                silence_id=self.silences.next_id(), author=by)
        self.silences.put(silence)
        self._keep_silence(silence)
        self._writes.append(_last_id("silence", int(silence.id)))
        self._event(SILENCE_CREATED, _silence_host(silence), silence.to_json(now), now)
        log.info("operations: silence {id} of {host} {metric} by {user}", id=silence.id,
                 host=silence.host, metric=silence.metric, user=by)
        self._changed()
        return silence

    def end_silence(self, silence_id: str, by: str | None) -> Silence | None:
        """End a silence now; it stays listed (expired) until forgotten."""
        now = self.clock.seconds()
        silence = self.silences.expire(silence_id, now, by)
        if silence is not None:
            self._keep_silence(silence)
            log.info("operations: silence {id} ended by {user}", id=silence_id, user=by)
            self._changed()
        return silence

    def _keep_silence(self, silence: Silence) -> None:
        row = tuple(silence.to_row().values())
        self._writes.append(lambda tables: tables.put(SILENCES, [row]))

    def acknowledge(self, host: str, target: str, level: str, by: str | None,
                    comment: str) -> Acknowledgement:
        now = self.clock.seconds()
        ack = Acknowledgement(host, target, level, by, comment, now)
        self.acks.put(ack)
        row = (host, target, level, by, comment, now)
        self._writes.append(lambda tables: tables.put(ACKNOWLEDGEMENTS, [row]))
        self._event(ACK_ADDED, host, _ack_json(ack), now)
        log.info("operations: {host} {target} acknowledged at {at_level} by {user}", host=host,
                 target=target or "(host)", at_level=level, user=by)
        return ack

    def unacknowledge(self, host: str, target: str, by: str | None,
                      reason: str = "api") -> Acknowledgement | None:
        ack = self.acks.remove(host, target)
        if ack is not None:
            self._forget_ack(ack, by, reason)
        return ack

    def _forget_ack(self, ack: Acknowledgement, by: str | None, reason: str) -> None:
        self._writes.append(lambda tables: tables.delete(ACKNOWLEDGEMENTS,
                                                         [(ack.host, ack.target)]))
        self._event(ACK_REMOVED, ack.host, {**_ack_json(ack), "removed_by": by,
                                            "reason": reason}, self.clock.seconds())

    def _changed(self) -> None:
        """A window or silence changed: act on it now (a window deleted ends now)."""
        if self.running:
            self.check()

    # The bus
    def on_alert(self, event: Event) -> None:
        """An alert that changed level (or cleared) ends its acknowledgement."""
        data = event.data
        if data.get("reminder"):
            return
        ack = self.acks.level_changed(event.host, str(data.get("metric_path")),
                                      str(data.get("level")))
        if ack is not None:
            self._forget_ack(ack, None, "level_changed")

    def on_host_state(self, event: Event) -> None:
        """A host that changed state ends the acknowledgement of its DOWN."""
        ack = self.acks.level_changed(event.host, HOST_TARGET, _STATES[event.kind])
        if ack is not None:
            self._forget_ack(ack, None, "level_changed")

    def on_removed(self, event: Event) -> None:
        for ack in self.acks.forget(event.host):
            self._forget_ack(ack, None, "host_removed")
        self.suppression.forget_host(event.host)

    def _event(self, kind: str, host: str, data: dict[str, Any], now: float) -> None:
        self.publish(Event(kind, host, now, data))

    def _window_event(self, kind: str, window: MaintenanceWindow, data: dict[str, Any],
                      now: float) -> None:
        """One event per host a window names one by one (their viewers see it on the feed),
        else one of no host (a window of globs or tags: only admins see it)."""
        selector = window.selector
        hosts = [""] if selector.tags or selector.has_globs or not selector.names \
            else list(selector.names)
        for host in hosts:
            self._event(kind, host, data, now)

    # The store
    def _take_writes(self) -> list[Write]:
        writes, self._writes = self._writes, []
        held, gone = self.suppression.take_dirty()
        if held or gone:
            rows = [(h.host, h.key, h.level, h.reason, h.label, h.since) for h in held]
            writes.append(lambda tables: tables.delete(HELD_PROBLEMS, gone))
            writes.append(lambda tables: tables.put(HELD_PROBLEMS, rows))
        if self.flaps is not None:
            changed, dropped = self.flaps.take_dirty()
            if changed or dropped:
                writes.append(lambda tables: tables.delete(FLAP_STATES, dropped))
                writes.append(lambda tables: tables.put(FLAP_STATES, _flap_rows(changed)))
        return writes

    def to_json(self) -> dict[str, Any]:
        now = self.clock.seconds()
        return {"windows": len(self.calendar), "open_windows": len(self.calendar.open(now)),
                "silences": len(self.silences.active(now)), "acknowledgements": len(self.acks),
                "held": len(self.suppression.held()), "released": self.released,
                "leading": self.leading,
                "flapping": 0 if self.flaps is None else self.flaps.flapping_now}


def _flap_rows(changed: list[FlapRow]) -> list[tuple[str, str, str, int, float | None]]:
    """The ``flap_states`` rows of changed histories (on the store's writer thread)."""
    return [(host, subject, json_bytes(list(history)).decode(), int(flapping), since)
            for host, subject, history, flapping, since in changed]


def _ack_json(ack: Acknowledgement) -> dict[str, Any]:
    return {"target": ack.target or None, **ack.to_json()}


def _silence_host(silence: Silence) -> str:
    """The host a silence's events belong to: its host, unless it is a glob (then none:
    only admins see those events on the feed)."""
    return "" if is_glob(silence.host) else silence.host


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _delete(table: Table, key: str) -> Write:
    return lambda tables: tables.delete(table, [(key,)])


def _last_id(kind: str, number: int) -> Write:
    return lambda tables: tables.raise_to(OPERATION_IDS, [(kind, number)])
