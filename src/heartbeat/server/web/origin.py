"""Where an HTTP request comes from: its client behind trusted proxies, and its site.

Pure code over header values (docs/SECURITY.md, "Browsers and proxies"):

- **Host allow-list** (``http_hosts``). A page of another site whose name the
  attacker points at this server (DNS rebinding) reaches it with its own name in
  ``Host``: only the names listed (``localhost`` by default; ``*.example.com``
  for any name under example.com; ``*`` for any) and IP addresses are answered.
  An IP address cannot be rebound: a page at ``http://192.0.2.7/`` is this server.
- **Cross-site changes**: a change (POST, PUT, DELETE...) sent by a browser from
  a page of another origin (``Origin``, ``Sec-Fetch-Site``) is refused in every
  mode, with or without users; clients that are not browsers send neither.
- **The client's address**: the TCP peer, or, when the peer is one of
  ``trusted_proxies``, the last address in ``X-Forwarded-For`` that is not one of
  them (a client may write anything to the left of what its proxy appended).
- **Local**: a request from a loopback address to a loopback name, through no
  proxy; only such a request may create the first user through the API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_HTTP_HOSTS",
    "FORWARDING_HEADERS",
    "RequestPolicy",
    "host_name",
]

DEFAULT_HTTP_HOSTS: Final = ("localhost",)
FORWARDING_HEADERS: Final = ("x-forwarded-for", "forwarded", "x-real-ip")
"""Headers a proxy adds: a request carrying one did not come straight from a local client."""
_CROSS_SITE: Final = frozenset({"cross-site", "same-site"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_name(host: str | None) -> str | None:
    """The name or address of a ``Host`` header (no port, no brackets, lower case)."""
    if host is None:
        return None
    try:
        name = urlsplit(f"//{host.strip()}").hostname
    except ValueError:
        return ""
    return (name or "").rstrip(".").lower()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


class RequestPolicy:
    """The Host allow-list, the proxies trusted to name the client, and the site rule."""

    def __init__(self, hosts: Iterable[str] = DEFAULT_HTTP_HOSTS,
                 trusted_proxies: Iterable[str] = ()) -> None:
        patterns = [h.rstrip(".").lower() for h in hosts]
        self.any_host = "*" in patterns
        self._names = frozenset(p for p in patterns if not p.startswith("*"))
        self._suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))
        self._proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in trusted_proxies)

    # Host
    def host_allowed(self, host: str | None) -> bool:
        """Whether a request with this ``Host`` header may be answered."""
        name = host_name(host)
        if name is None or self.any_host or name in self._names or _ip(name) is not None:
            return True  # no Host at all: no browser, nothing to rebind
        return bool(name) and any(name.endswith(suffix) for suffix in self._suffixes)

    # Client
    def trusted(self, ip: str) -> bool:
        address = _ip(ip)
        return address is not None and any(address in net for net in self._proxies)

    def client(self, peer: str, forwarded_for: Sequence[str] = ()) -> str:
        """The client's address: ``peer``, or behind a trusted proxy the last address of
        ``X-Forwarded-For`` (all its headers, in order) that is not a trusted proxy."""
        if not self._proxies or not self.trusted(peer):
            return peer
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            if _ip(hop) is None:
                return peer  # garbage where an address should be: trust none of it
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer

    # Site
    @staticmethod
    def cross_site(origin: str | None, fetch_site: str | None, own_origin: str) -> str | None:
        """Why a change sent with these headers came from another site, or None.

        ``own_origin`` is this server's origin as the request reached it
        (``scheme://host[:port]``); ports and default ports compare as browsers do.
        """
        if fetch_site is not None and fetch_site.strip().lower() in _CROSS_SITE:
            return f"Sec-Fetch-Site: {fetch_site.strip()}"
        if origin is not None and _normal(origin) != _normal(own_origin):
            return f"Origin: {origin[:100]}"
        return None

    @staticmethod
    def local(peer: str, host: str | None, forwarding: bool) -> bool:
        """A request from a loopback address, to a loopback name, through no proxy."""
        address = _ip(peer)
        if address is None or not address.is_loopback or forwarding:
            return False
        name = host_name(host)
        if name is None or name == "localhost":
            return True
        named = _ip(name or "")
        return named is not None and named.is_loopback


_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _normal(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, lower-case host, port with the scheme's default filled in); None: opaque."""
    if origin.strip() == "null":
        return None
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").rstrip(".").lower(), port or _DEFAULT_PORTS.get(scheme)
