"""The server's configuration checked whole: its keys and the rule book they make.

Loading a server config is one call, :func:`load_settings`, used by ``twistd
heartbeat`` (and its ``--check``), ``make run`` and the tests alike: it checks
every key (heartbeat.config.server) and builds the threshold rule book, the host
dependencies and the static maintenance windows from them, so a bad rule, a
dependency cycle or a bad window is a config error at load time like any other
bad key, and nothing builds them again later.
Pure code: the config package knows nothing of the server's engines; this
module, on the server's side, joins the two.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

from heartbeat.config.loader import ConfigError, load_config, parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.garbage import collector_paused
from heartbeat.protocol import valid_host_name
from heartbeat.server.dependencies import DependencyGraph, find_cycle
from heartbeat.server.jobs import JOB_NAME, JobSpec, Period, Timing, valid_uuid
from heartbeat.server.maintenance import WINDOW_ID, MaintenanceWindow, parse_window
from heartbeat.server.schedule import (
    CronExpression,
    CronSchedule,
    local_zone_name,
    parse_duration,
    zone,
)
from heartbeat.server.thresholds.rulebook import RuleBook

__all__ = ["DEFAULTS_SOURCE", "ServerSettings", "load_settings", "parse_settings"]

DEFAULTS_SOURCE = "<defaults>"
"""How errors name the built-in defaults (no file)."""


@dataclass(frozen=True)
class ServerSettings:
    """A checked server config: its keys, the rule book of its thresholds, its file."""

    config: ServerConfig
    rules: RuleBook
    path: str | None
    """The file it came from; None: the built-in defaults."""
    dependencies: DependencyGraph = field(default_factory=DependencyGraph)
    maintenance: tuple[MaintenanceWindow, ...] = ()
    """The windows under ``maintenance:`` (read-only through the API)."""
    zone: str = "UTC"
    """``timezone``, else the machine's: for windows and silences that name none."""
    jobs: tuple[JobSpec, ...] = ()
    """The cron jobs under ``jobs:``; a uuid of "" is made (and kept) by the job service."""

    @classmethod
    def from_config(cls, config: ServerConfig, path: str | None = None,
                    machine_zone: str | None = None) -> ServerSettings:
        """Check what the keys alone do not say (threshold rules, dependencies, windows)
        for ``config``; a :class:`~heartbeat.config.loader.ConfigError` names ``path`` and
        the key. ``machine_zone``: this machine's time zone (None: found out)."""
        source = path or DEFAULTS_SOURCE
        rules = RuleBook.from_config(config, source)
        zone_name = config.timezone or machine_zone or _machine_zone()
        try:
            zone(zone_name)
        except ValueError as e:
            raise ConfigError(source, "timezone", str(e)) from None
        return cls(config, rules, path, _dependencies(config, source),
                   _windows(config, source, zone_name), zone_name,
                   _jobs(config, source, zone_name))


def _machine_zone() -> str:
    """This machine's IANA zone: ``$TZ``, else where ``/etc/localtime`` points, else UTC."""
    try:
        link = os.readlink("/etc/localtime")
    except OSError:
        link = None
    return local_zone_name(os.environ.get("TZ"), link)


def _dependencies(config: ServerConfig, source: str) -> DependencyGraph:
    """``parents:`` of every host: hosts under ``hosts:``, never forming a cycle."""
    parents: dict[str, list[str]] = {}
    for host, settings in config.hosts.items():
        for name in settings.parents:
            if name == host:
                raise ConfigError(source, f"hosts.{host}.parents",
                                  "a host cannot be its own parent")
            if name not in config.hosts:
                close = difflib.get_close_matches(name, list(config.hosts), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(source, f"hosts.{host}.parents",
                                  f"no host {name!r} under hosts:{hint}; a parent must be "
                                  f"listed there too")
        if settings.parents:
            parents[host] = list(settings.parents)
    cycle = find_cycle(parents)
    if cycle is not None:
        raise ConfigError(source, f"hosts.{cycle[0]}.parents",
                          f"dependency cycle {' -> '.join(cycle)}")
    return DependencyGraph(parents)


def _windows(config: ServerConfig, source: str,
             zone_name: str) -> tuple[MaintenanceWindow, ...]:
    """The windows under ``maintenance:``: each named by its ``name`` (else config-N)."""
    windows: list[MaintenanceWindow] = []
    seen: set[str] = set()
    for i, raw in enumerate(config.maintenance):
        key = f"maintenance[{i}]"
        name = raw.get("name") if isinstance(raw, dict) else None
        if name is None:
            name = f"config-{i + 1}"
        elif not isinstance(name, str) or not WINDOW_ID.fullmatch(name) or name.isdigit():
            raise ConfigError(source, f"{key}.name", f"not a window name (1-64 of A-Z a-z 0-9 "
                                                     f". _ -, not only digits): {name!r:.60}")
        if name in seen:
            raise ConfigError(source, f"{key}.name", f"a second window named {name!r}")
        seen.add(name)
        windows.append(parse_window(raw, key=key, source=source, default_zone=zone_name,
                                    window_id=name))
    return tuple(windows)


def _duration(value: object, source: str, key: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ConfigError(source, key, str(e)) from None


def _jobs(config: ServerConfig, source: str, zone_name: str) -> tuple[JobSpec, ...]:
    """The jobs under ``jobs:``: a schedule (in its zone) or a period, a grace, a uuid."""
    specs: list[JobSpec] = []
    uuids: dict[str, str] = {}
    for name, job in config.jobs.items():
        key = f"jobs.{name}"
        if not JOB_NAME.fullmatch(name):
            raise ConfigError(source, key, "a job's name is 1-64 of A-Z a-z 0-9 . _ - "
                                           "(it names the job in the API and in notices)")
        timing: Timing
        if (job.schedule is None) == (job.period is None):
            raise ConfigError(source, key, "give either schedule (a cron expression) or "
                                           "period (e.g. 1h), not both or neither")
        if job.schedule is not None:
            try:
                expression = CronExpression.parse(job.schedule)
            except ValueError as e:
                raise ConfigError(source, f"{key}.schedule", str(e)) from None
            try:
                tz = zone(job.timezone or zone_name)
            except ValueError as e:
                raise ConfigError(source, f"{key}.timezone", str(e)) from None
            timing = CronSchedule(expression, tz)
        else:
            if job.timezone is not None:
                raise ConfigError(source, f"{key}.timezone", "only a schedule has a time zone")
            timing = Period(_duration(job.period, source, f"{key}.period"))
        if job.host is not None and not valid_host_name(job.host):
            raise ConfigError(source, f"{key}.host", f"not a host name (1-253 of A-Z a-z 0-9 "
                                                     f". _ -): {job.host!r:.60}")
        grace = _duration(job.grace, source, f"{key}.grace")
        max_runtime = grace if job.max_runtime is None else _duration(
            job.max_runtime, source, f"{key}.max_runtime")
        uuid = ""
        if job.uuid is not None:
            if not valid_uuid(job.uuid):
                raise ConfigError(source, f"{key}.uuid", f"not a UUID: {job.uuid!r:.60} "
                                  "(e.g. from `python3 -c 'import uuid; print(uuid.uuid4())'`)")
            uuid = job.uuid.lower()
            if uuid in uuids:
                raise ConfigError(source, f"{key}.uuid", f"job {uuids[uuid]!r} has it too")
            uuids[uuid] = name
        specs.append(JobSpec(name, uuid, timing, grace, max_runtime, host=job.host,
                             description=job.description))
    return tuple(specs)


def load_settings(path: str | os.PathLike[str] | None) -> ServerSettings:
    """Load and check a server config file; ``None`` gives the built-in defaults."""
    with collector_paused():  # a fleet's hosts: walked to check them make no garbage
        return ServerSettings.from_config(load_config(ServerConfig, path),
                                          None if path is None else str(path))


def parse_settings(text: str, source: str) -> ServerSettings:
    """Check a server config's YAML ``text``; ``source`` names it in errors."""
    return ServerSettings.from_config(parse_config(ServerConfig, text, source), source)
