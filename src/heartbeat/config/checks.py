"""Checks of single keys that both schemas use: the ``check`` of an :func:`~.loader.option`.

Each takes the value already converted to the field's type and returns what
is wrong with it, or None. Pure code.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from heartbeat.config.loader import Check

__all__ = [
    "MIN_KEY_LENGTH",
    "USER_NAME",
    "dns_label",
    "each",
    "host_pattern_problem",
    "http_url",
    "key_problem",
    "network_problem",
    "not_negative",
    "one_of",
    "port_number",
    "positive",
]

MIN_KEY_LENGTH = 16
"""Bytes a shared key's secret has at least."""

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""A user name: what ``users:``, access lists, logins and the API's paths accept."""


_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def dns_label(host: str) -> str | None:
    """The DNS label of host name ``host`` (its short name, lower case), or None if that
    is not a label. ``web1``, ``WEB1`` and ``web1.lan`` share one: ``web1``."""
    label = host.split(".", 1)[0].lower()
    return label if _DNS_LABEL.fullmatch(label) else None


def port_number(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else f"port {value} is out of range 1-65535"


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def not_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must not be negative, got {value}"


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, got {value!r}"

    return check


def http_url(value: Any) -> str | None:
    if value.startswith(("http://", "https://")) and len(value) > len("https://"):
        return None
    return f"must be an http:// or https:// URL, got {value!r:.60}"


def each(check: Check) -> Check:
    """``check`` applied to every item of a list; the first problem is the answer."""

    def check_each(values: Any) -> str | None:
        for value in values:
            problem = check(value)
            if problem:
                return problem
        return None

    return check_each


def key_problem(secret: str) -> str | None:
    """What is wrong with a shared key's secret (server ``keys:``, agent ``key``), or None."""
    if len(secret.encode("utf-8")) < MIN_KEY_LENGTH:
        return (f"too short: use at least {MIN_KEY_LENGTH} characters "
                f"(e.g. the output of 'openssl rand -hex 32')")
    return None


def host_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be an ``http_hosts`` entry (a name, ``*.domain``, ``*``), or None."""
    name = pattern.removeprefix("*.")
    if pattern == "*" or (name and all(part and all(c.isalnum() or c in "-_" for c in part)
                                       for part in name.rstrip(".").split("."))):
        return None
    return f"{pattern!r} is not a host name, *.domain or *"


def network_problem(network: str) -> str | None:
    """Why ``network`` cannot be an IP address or network (``10.0.0.1``, ``10.0.0.0/8``)."""
    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        return f"{network!r:.60} is not an IP address or network (e.g. 10.0.0.1 or 10.0.0.0/8)"
    return None
