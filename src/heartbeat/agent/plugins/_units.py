"""Unit conversions shared by the built-in plugins."""

from __future__ import annotations

MB = 1024.0 * 1024.0
GB = MB * 1024.0


def mb(value: float) -> float:
    """Bytes as MiB, rounded to 0.1."""
    return round(value / MB, 1)


def gb(value: float) -> float:
    """Bytes as GiB, rounded to 0.01."""
    return round(value / GB, 2)
