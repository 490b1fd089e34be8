"""Parsers for ``zpool list``, ``zpool iostat``, ``zpool status`` and ZFS arcstats.

Pure code: command output in, plain dicts out, tolerant of every format in
tests/fixtures/zfs (OpenZFS 2.x, ZoL 0.6/0.7, legacy FreeBSD with ``%``/``x``
suffixes despite ``-p``, tab or space separated, with or without a header).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DEFAULT_LIST_COLUMNS",
    "LIST_COLUMNS",
    "PoolStatus",
    "VdevRow",
    "merge_pools",
    "parse_arcstats",
    "parse_iostat",
    "parse_list",
    "parse_status",
]

LIST_COLUMNS: Final = ("name", "size", "alloc", "free", "frag", "cap", "dedup", "health")
"""What the plugin asks for: ``zpool list -Hp -o name,size,alloc,free,frag,cap,dedup,health``."""

STATES: Final = frozenset({"ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "REMOVED", "UNAVAIL",
                           "SPLIT", "UNKNOWN", "SUSPENDED", "AVAIL", "INUSE"})
HEALTHY_VDEV: Final = frozenset({"ONLINE", "AVAIL", "INUSE"})

_HEADER_NAMES: Final = {
    "name": "name", "size": "size", "alloc": "alloc", "allocated": "alloc", "free": "free",
    "frag": "frag", "fragmentation": "frag", "cap": "cap", "capacity": "cap",
    "dedup": "dedup", "dedupratio": "dedup", "health": "health", "ckpoint": "ckpoint",
    "checkpoint": "ckpoint", "expandsz": "expandsz", "expandsize": "expandsz",
    "altroot": "altroot",
}
DEFAULT_LIST_COLUMNS: Final = ("name", "size", "alloc", "free", "ckpoint", "expandsz", "frag",
                               "cap", "dedup", "health", "altroot")
_SUFFIX: Final = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50,
                  "E": 1 << 60}


def _int(text: str) -> int | None:
    """An exact or zpool-shortened count (``2.04K``); ``-``, ``%``, ``x`` tolerated."""
    text = text.strip().rstrip("%x")
    if text in ("", "-"):
        return None
    if text[-1:].upper() in _SUFFIX:
        try:
            return int(float(text[:-1]) * _SUFFIX[text[-1].upper()])
        except ValueError:
            return None
    try:
        return int(text)
    except ValueError:
        try:
            return int(float(text))
        except ValueError:
            return None


def _float(text: str) -> float | None:
    text = text.strip().rstrip("x%")
    if text in ("", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_list(text: str, columns: Sequence[str] = LIST_COLUMNS) -> dict[str, dict[str, Any]]:
    """Pools from ``zpool list -Hp [-o ...]``; a ``NAME ...`` header line sets the columns.

    Vdev rows (indented) and ``logs``/``cache``-style group rows are skipped.
    """
    names = [_HEADER_NAMES.get(c.lower(), c.lower()) for c in columns]
    pools: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if not line.strip() or line[0].isspace():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if fields[0] == "NAME":
            names = [_HEADER_NAMES.get(c.lower(), c.lower()) for c in fields]
            continue
        row = dict(zip(names, fields, strict=False))
        health = row.get("health", "")
        if health not in STATES:
            continue
        pools[row["name"]] = {
            "health": health,
            "health_ok": 1 if health == "ONLINE" else 0,
            "size": _int(row.get("size", "-")),
            "alloc": _int(row.get("alloc", "-")),
            "free": _int(row.get("free", "-")),
            "capacity": _int(row.get("cap", "-")),
            "fragmentation": _int(row.get("frag", "-")),
            "dedup_ratio": _float(row.get("dedup", "-")),
        }
    return pools


def parse_iostat(text: str) -> dict[str, dict[str, int | None]]:
    """Per pool from ``zpool iostat -Hp``: the first report, the average per second since import."""
    pools: dict[str, dict[str, int | None]] = {}
    for line in text.splitlines():
        if not line.strip() or line[0].isspace():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 7 or fields[0] in pools:
            continue
        pools[fields[0]] = {
            "read_ops": _int(fields[3]), "write_ops": _int(fields[4]),
            "read_bytes": _int(fields[5]), "write_bytes": _int(fields[6]),
        }
    return pools


@dataclass
class VdevRow:
    """One row of the ``config:`` table; ``depth`` 0 is the pool itself."""

    name: str
    depth: int
    state: str | None
    read: int | None = None
    write: int | None = None
    cksum: int | None = None
    note: str | None = None
    leaf: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "depth": self.depth,
                "read": self.read, "write": self.write, "cksum": self.cksum, "note": self.note}


@dataclass
class PoolStatus:
    """What ``zpool status`` says about one pool."""

    name: str
    state: str | None = None
    status: str | None = None
    action: str | None = None
    scan: str | None = None
    vdevs: list[VdevRow] = field(default_factory=list)
    data_errors: int | None = None
    errors_text: str | None = None

    def to_json(self) -> dict[str, Any]:
        leaves = [v for v in self.vdevs if v.leaf and v.depth > 0 and v.state is not None]

        def total(attr: str) -> int:
            return sum(getattr(v, attr) or 0 for v in leaves)

        return {
            "read_errors": total("read"),
            "write_errors": total("write"),
            "checksum_errors": total("cksum"),
            "data_errors": self.data_errors,
            "vdevs_unhealthy": sum(1 for v in self.vdevs if v.depth > 0 and v.state is not None
                                   and v.state not in HEALTHY_VDEV),
            "scan": self.scan,
            "status": self.status,
            "vdevs": [v.to_json() for v in self.vdevs if v.depth > 0],
        }


_KEY = re.compile(r"^\s*(pool|state|status|action|see|scan|scrub|config|errors):\s?(.*)$")


def _table_row(line: str, header_indent: int) -> VdevRow | None:
    expanded = line.expandtabs(8)
    indent = len(expanded) - len(expanded.lstrip())
    fields = expanded.split()
    if not fields:
        return None
    depth = max(0, (indent - header_indent) // 2)
    if len(fields) == 1 or fields[1] not in STATES:
        return VdevRow(fields[0], depth, None, note=" ".join(fields[1:]) or None)
    counts = [_int(f) for f in fields[2:5]] + [None] * 3
    note = " ".join(fields[5:]) or None if len(fields) > 5 else None
    return VdevRow(fields[0], depth, fields[1], counts[0], counts[1], counts[2], note)


def _errors(pool: PoolStatus, text: str) -> None:
    pool.errors_text = text if pool.errors_text is None else f"{pool.errors_text}; {text}"
    if text.startswith("No known data errors"):
        pool.data_errors = 0
    elif match := re.match(r"(\d+) data errors", text):
        pool.data_errors = int(match.group(1))
    elif text.startswith("Permanent errors"):
        pool.data_errors = pool.data_errors or 0


def parse_status(text: str) -> dict[str, PoolStatus]:
    """Every pool in ``zpool status [-p] [-v]`` output, in order."""
    pools: dict[str, PoolStatus] = {}
    pool: PoolStatus | None = None
    section: str | None = None
    header_indent: int | None = None
    for line in text.splitlines():
        match = _KEY.match(line)
        if match and not (section == "config" and header_indent is not None
                          and match.group(1) not in ("errors", "pool")):
            key, value = match.group(1), match.group(2).strip()
            section = key
            if key == "pool":
                pool = pools[value] = PoolStatus(value)
                header_indent = None
            elif pool is None:
                continue
            elif key == "state":
                pool.state = value
            elif key in ("status", "action"):
                setattr(pool, key, value)
            elif key in ("scan", "scrub"):
                pool.scan = value
            elif key == "errors":
                _errors(pool, value)
            continue
        if pool is None or not line.strip():
            if section == "config" and header_indent is not None and pool is not None \
                    and pool.vdevs:
                section = "after_config"
            continue
        if section in ("status", "action", "scan"):
            current = getattr(pool, section if section != "scrub" else "scan")
            setattr(pool, section, f"{current} {line.strip()}".strip())
        elif section == "config":
            fields = line.split()
            if fields[:2] == ["NAME", "STATE"]:
                expanded = line.expandtabs(8)
                header_indent = len(expanded) - len(expanded.lstrip())
            elif header_indent is not None:
                row = _table_row(line, header_indent)
                if row is not None:
                    if pool.vdevs and pool.vdevs[-1].depth < row.depth:
                        pool.vdevs[-1].leaf = False
                    pool.vdevs.append(row)
        elif section == "errors" and pool.errors_text \
                and pool.errors_text.startswith("Permanent errors") and line.startswith(" "):
            pool.data_errors = (pool.data_errors or 0) + 1
    return pools


def merge_pools(listed: dict[str, dict[str, Any]], iostat: dict[str, dict[str, int | None]],
                status: dict[str, PoolStatus]) -> dict[str, dict[str, Any]]:
    """One record per pool from the three commands (a pool only in status still shows)."""
    pools: dict[str, dict[str, Any]] = {}
    for name in [*listed, *(n for n in status if n not in listed)]:
        record: dict[str, Any] = dict(listed.get(name) or {})
        pool_status = status.get(name)
        if "health" not in record:
            health = pool_status.state if pool_status and pool_status.state else "UNKNOWN"
            record.update({"health": health, "health_ok": 1 if health == "ONLINE" else 0})
        record.update(iostat.get(name) or {"read_ops": None, "write_ops": None,
                                            "read_bytes": None, "write_bytes": None})
        if pool_status is not None:
            record.update(pool_status.to_json())
        pools[name] = record
    return pools


def parse_arcstats(text: str) -> dict[str, int]:
    """``name type value`` rows of /proc/spl/kstat/zfs/arcstats, by name."""
    stats: dict[str, int] = {}
    for line in text.splitlines()[2:]:
        fields = line.split()
        if len(fields) == 3:
            try:
                stats[fields[0]] = int(fields[2])
            except ValueError:
                continue
    return stats
