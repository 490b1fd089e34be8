"""Secrets masked: a config as plain data for the settings page and the API.

A field declared ``option(..., secret=True)`` is never shown back: its value
shows as :data:`SECRET_MASK` (an unset one stays null). Pure code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from heartbeat.config.server import ServerConfig

__all__ = ["SECRET_MASK", "masked", "settings_view"]

SECRET_MASK = "********"
"""What a secret shows as; an unset secret stays null, so "not set" is still visible."""


def _mask(value: Any) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, dict):  # e.g. keys: the ids are names, the values secrets
        return {str(k): SECRET_MASK for k in value}
    return SECRET_MASK


def masked(value: Any) -> Any:
    """A config value as plain JSON-able data with every ``secret`` field masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            out[f.name] = _mask(item) if f.metadata.get("secret") else masked(item)
        return out
    if isinstance(value, dict):
        return {str(k): masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def unit_of(doc: str) -> str | None:
    """A key's unit from its doc's closing "(s)" or "(bytes)", for the UI to show
    ``604800`` as 7 d and ``104857600`` as 100 MiB."""
    if doc.endswith("(s)"):
        return "seconds"
    if doc.endswith("(bytes)"):
        return "bytes"
    return None


def settings_view(config: ServerConfig) -> list[dict[str, Any]]:
    """Every server key in declaration order: its value and default (masked), doc, secret.

    What the settings page shows: ``changed`` says the value is not the default.
    """
    defaults = ServerConfig()
    rows = []
    for f in dataclasses.fields(ServerConfig):
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        secret = bool(f.metadata.get("secret"))
        rows.append({
            "key": f.name,
            "value": _mask(value) if secret else masked(value),
            "default": _mask(default) if secret else masked(default),
            "changed": value != default,
            "doc": f.metadata.get("doc", ""),
            "unit": unit_of(f.metadata.get("doc", "")),
            "secret": secret,
        })
    return rows
