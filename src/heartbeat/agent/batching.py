"""Packing plugin results into as few ``PLG`` datagrams as fit.

Pure code: the results and the size limits in, datagrams out. Each datagram is
an encoded ``PLG`` (zlib when the text passes 512 bytes, as the protocol asks)
no larger than ``max_datagram``, except that a single plugin that is larger on
its own still goes alone, up to what UDP and the server accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from heartbeat.protocol import DEFAULT_LIMITS, encode
from heartbeat.text import json_bytes

__all__ = ["MAX_UDP_PAYLOAD", "pack_plugins"]

MAX_UDP_PAYLOAD: Final = 65000
"""Below the 65,507-byte IPv4 limit: one datagram a plugin cannot outgrow."""


def _message(header: Mapping[str, Any], plugins: Mapping[str, Any]) -> dict[str, Any]:
    return {**header, "ID": "PLG", "plugins": dict(plugins)}


def _too_large(header: Mapping[str, Any], name: str, data: Any,
               max_inflated: int) -> tuple[bytes, str | None]:
    """Encode one plugin alone; a reason instead when no datagram could carry it."""
    message = _message(header, {name: data})
    text_size = len(json_bytes(message))
    if text_size > max_inflated:
        return b"", f"data too large: {text_size} bytes of JSON (the server takes {max_inflated})"
    datagram = encode(message)
    if len(datagram) > MAX_UDP_PAYLOAD:
        return b"", f"data too large: {len(datagram)} bytes compressed"
    return datagram, None


def pack_plugins(
    header: Mapping[str, Any],
    plugins: Mapping[str, Any],
    max_datagram: int,
    max_inflated: int = DEFAULT_LIMITS.max_inflated,
) -> list[bytes]:
    """Datagrams carrying every entry of ``plugins`` (``{name: data}``), in order.

    ``header`` holds the common fields (``name``, ``seq``, ``ts``...). A plugin whose
    data cannot travel at all is sent as ``{"error": "data too large ..."}`` instead, so
    the server shows why it is missing.
    """
    datagrams: list[bytes] = []
    batch: dict[str, Any] = {}
    current = b""
    for name, data in plugins.items():
        if batch:
            candidate = encode(_message(header, {**batch, name: data}))
            if len(candidate) <= max_datagram:
                batch[name] = data
                current = candidate
                continue
            datagrams.append(current)
        alone, problem = _too_large(header, name, data, max_inflated)
        sent = data if problem is None else {"error": problem}
        if problem is not None:
            alone = encode(_message(header, {name: sent}))
        batch = {name: sent}
        current = alone
    if batch:
        datagrams.append(current)
    return datagrams
