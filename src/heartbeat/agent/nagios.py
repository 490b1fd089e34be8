"""Monitoring Plugins output: status text, long output and performance data.

Pure code, following the Monitoring Plugins development guidelines: the first
line is ``TEXT | PERFDATA``; later lines are long output, and from the first
``|`` in them on, the rest of the text is more performance data. Each
perfdata item is ``'label'=value[UOM];[warn];[crit];[min];[max]`` where the
label may be quoted (``''`` stands for a quote inside), ``value`` may be ``U``
(could not be measured), trailing empty fields may be left out, and warn/crit
are ranges ``[@][start:][end]`` (``~`` is minus infinity). The status always
comes from the exit code, never from the text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "STATUS_NAMES",
    "CheckOutput",
    "PerfValue",
    "Range",
    "field_label",
    "parse_output",
    "parse_perfdata",
    "parse_range",
    "status_for_exit",
]

STATUS_NAMES: Final = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
UNKNOWN: Final = 3

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VALUE = re.compile(rf"({_NUMBER})(.*)", re.DOTALL)
_PLAIN_NUMBER = re.compile(_NUMBER)


def status_for_exit(exit_code: int | None) -> int:
    """0-3 as they are; anything else (4-255, killed, never started) is UNKNOWN."""
    return exit_code if exit_code in (0, 1, 2, 3) else UNKNOWN


@dataclass(frozen=True)
class Range:
    """A threshold range; a value alerts when outside [start, end] (inside with ``@``)."""

    start: float = 0.0
    end: float = math.inf
    inside: bool = False

    def alerts(self, value: float) -> bool:
        within = self.start <= value <= self.end
        return within if self.inside else not within


def _number(text: str) -> float:
    if not _PLAIN_NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def parse_range(text: str) -> Range:
    """``[@][start:][end]``: ``10`` is 0..10, ``10:`` is 10..inf, ``~:10`` is -inf..10."""
    body = text.strip()
    inside = body.startswith("@")
    if inside:
        body = body[1:]
    if not body:
        raise ValueError("empty range")
    if ":" in body:
        start_text, end_text = body.split(":", 1)
        start = -math.inf if start_text == "~" else (_number(start_text) if start_text else 0.0)
    else:
        start, end_text = 0.0, body
    end = _number(end_text) if end_text else math.inf
    if start > end:
        raise ValueError(f"range start {start:g} is above its end {end:g}")
    return Range(start, end, inside)


@dataclass(frozen=True)
class PerfValue:
    """One performance-data item; ``value`` is None for ``U``."""

    label: str
    value: float | None
    uom: str = ""
    warn: Range | None = None
    crit: Range | None = None
    minimum: float | None = None
    maximum: float | None = None


def _scan_label(text: str, i: int) -> tuple[str, int]:
    """The label starting at ``text[i]`` and the index just past its ``=``."""
    if text[i] == "'":
        chars = []
        i += 1
        while i < len(text):
            if text[i] == "'":
                if text.startswith("''", i):
                    chars.append("'")
                    i += 2
                    continue
                i += 1
                break
            chars.append(text[i])
            i += 1
        else:
            raise ValueError("unterminated quoted label")
        if not text.startswith("=", i):
            raise ValueError(f"no '=' after label {''.join(chars)!r}")
        return "".join(chars), i + 1
    end = text.find("=", i)
    space = re.search(r"\s", text[i:])
    if end < 0 or (space is not None and i + space.start() < end):
        raise ValueError(f"no '=' in {text[i:].split(maxsplit=1)[0]!r}")
    return text[i:end], end + 1


def _item(label: str, spec: str) -> PerfValue:
    fields = spec.split(";")
    head = fields[0]
    if head == "U" or (head.startswith("U") and not _VALUE.fullmatch(head)):
        value, uom = None, ""
    else:
        match = _VALUE.fullmatch(head)
        if match is None:
            raise ValueError(f"{label}: bad value {head!r}")
        value, uom = float(match.group(1)), match.group(2)
    rest = [*fields[1:5], "", "", "", ""][:4]
    warn = parse_range(rest[0]) if rest[0] else None
    crit = parse_range(rest[1]) if rest[1] else None
    minimum = _number(rest[2]) if rest[2] else None
    maximum = _number(rest[3]) if rest[3] else None
    return PerfValue(label, value, uom, warn, crit, minimum, maximum)


def parse_perfdata(text: str) -> tuple[list[PerfValue], list[str]]:
    """Every well-formed item in ``text``, and a note for each one that was not."""
    values: list[PerfValue] = []
    problems: list[str] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return values, problems
        try:
            label, i = _scan_label(text, i)
            match = re.compile(r"\S*").match(text, i)
            spec = match.group(0) if match else ""
            i += len(spec)
            if not label:
                raise ValueError("empty label")
            values.append(_item(label, spec))
        except ValueError as e:
            problems.append(str(e))
            match = re.compile(r"\S*").match(text, i)
            i += len(match.group(0)) if match else 1
            if i < len(text) and not text[i].isspace():
                i += 1


@dataclass(frozen=True)
class CheckOutput:
    """A check's text split into its parts."""

    text: str
    long_text: str = ""
    perfdata: list[PerfValue] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_output(output: str) -> CheckOutput:
    """Split plugin output into status text, long output and parsed performance data."""
    lines = output.replace("\r\n", "\n").rstrip("\n").split("\n")
    first, _, perf = lines[0].partition("|")
    perf_parts = [perf] if perf.strip() else []
    long_lines: list[str] = []
    for index, line in enumerate(lines[1:], start=1):
        if "|" in line:
            before, _, after = line.partition("|")
            if before.strip():
                long_lines.append(before.rstrip())
            perf_parts.append(after)
            perf_parts.extend(lines[index + 1:])
            break
        long_lines.append(line)
    values, problems = parse_perfdata(" ".join(perf_parts))
    return CheckOutput(first.strip(), "\n".join(long_lines).strip("\n"), values, problems)


def field_label(label: str) -> str:
    """A perfdata label as part of a field name: ``[A-Za-z0-9_]`` only, ``/`` alone -> root."""
    if label.strip() == "/":
        return "root"
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_")
    return cleaned or "value"
