"""nagios_runner: runs Monitoring Plugins checks and reports status, output and perfdata.

Each configured command runs at once, as its own child process (never through a
shell) with a timeout that kills it. See docs/NAGIOS_INTEGRATION.md.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from heartbeat.agent.nagios import (
    STATUS_NAMES,
    UNKNOWN,
    PerfValue,
    field_label,
    parse_output,
    status_for_exit,
)
from heartbeat.agent.plugin import MonitorPlugin, PluginOptions
from heartbeat.agent.process import ProcessResult, run_process
from heartbeat.config.agent import command_line
from heartbeat.config.checks import positive
from heartbeat.config.loader import option

log = Logger()


@dataclass(frozen=True)
class NagiosCommand:
    name: str = option("", doc="prefix of this check's fields")
    command: str | list[str] = option("", doc="program and arguments (split, never a shell)")


def _complete(commands: list[NagiosCommand]) -> str | None:
    names: set[str] = set()
    for index, command in enumerate(commands):
        if not command.name or not (command.command.strip() if isinstance(command.command, str)
                                    else command.command):
            return f"entry {index} needs both a name and a command"
        if command.name in names:
            return f"entry {index}: the name {command.name!r} is used twice"
        if (problem := command_line(command.command)) is not None:
            return f"entry {index}: {problem}"
        names.add(command.name)
    return None


@dataclass(frozen=True)
class NagiosOptions(PluginOptions):
    commands: list[NagiosCommand] = option([], _complete, doc="the checks to run")
    command_timeout: float = option(30.0, positive, doc="seconds before a check is killed")


def check_fields(name: str, result: ProcessResult,
                 timeout: float) -> tuple[dict[str, Any], list[str]]:
    """The fields one check contributes (status code and name, output, one per perfdata
    label), and notes on performance-data items that were malformed and skipped."""
    perfdata: list[PerfValue]
    problems: list[str] = []
    if result.error is not None:
        code, text, perfdata = UNKNOWN, result.error, []
    elif result.timed_out:
        code, text, perfdata = UNKNOWN, f"timed out after {timeout:g} s, killed", []
    else:
        raw = result.text("stdout")
        if not raw.strip():
            raw = result.text("stderr")
        parsed = parse_output(raw) if raw.strip() else None
        perfdata = parsed.perfdata if parsed else []
        problems = parsed.problems if parsed else []
        text = parsed.text if parsed and parsed.text else ""
        if result.signal is not None:
            code = UNKNOWN
            text = f"{result.describe()}" + (f": {text}" if text else "")
        else:
            code = status_for_exit(result.exit_code)
            if result.exit_code not in (0, 1, 2, 3):
                text = f"exit code {result.exit_code}" + (f": {text}" if text else "")
    fields: dict[str, Any] = {
        f"{name}_status_code": code,
        f"{name}_status": STATUS_NAMES[code],
        f"{name}_output": text[:1000],
    }
    taken = set(fields)
    for value in perfdata:
        key = f"{name}_{field_label(value.label)}"
        n = 2
        while key in taken:
            key = f"{name}_{field_label(value.label)}_{n}"
            n += 1
        taken.add(key)
        fields[key] = value.value
    return fields, problems


class NagiosRunner(MonitorPlugin):
    name = "nagios_runner"
    timeout = 120.0
    Options = NagiosOptions
    options: NagiosOptions

    def __init__(self, options: PluginOptions, context: Any) -> None:
        super().__init__(options, context)
        self.checks = [(c.name, shlex.split(c.command) if isinstance(c.command, str)
                        else list(c.command)) for c in self.options.commands]

    @classmethod
    def wants_to_run(cls, options: PluginOptions) -> bool:
        return options.enabled and bool(getattr(options, "commands", []))

    def check(self) -> None:
        """Warn about absolute program paths that are missing or not executable."""
        for name, argv in self.checks:
            program = argv[0]
            if os.path.isabs(program) and not os.access(program, os.X_OK):
                problem = "does not exist" if not os.path.exists(program) \
                    else "is not executable"
                log.warn("nagios_runner: check {check}: {program} {problem}", check=name,
                         program=program, problem=problem)

    async def collect(self) -> dict[str, Any]:
        timeout = self.options.command_timeout
        results = await defer.gatherResults(
            [run_process(self.reactor, argv, timeout) for _, argv in self.checks])
        data: dict[str, Any] = {}
        for (name, _), result in zip(self.checks, results, strict=True):
            fields, problems = check_fields(name, result, timeout)
            if problems:
                log.warn("nagios_runner: check {check}: skipped bad performance data: "
                         "{problems}", check=name, problems="; ".join(problems))
            data.update(fields)
        return data
