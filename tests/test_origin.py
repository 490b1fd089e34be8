"""Where a request comes from: the Host allow-list, trusted proxies, the site rule, locality."""

from __future__ import annotations

import pytest

from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.server.limits import address_key
from heartbeat.server.web.origin import RequestPolicy


class HostAllowListTests:
    @pytest.mark.parametrize(("host", "allowed"), [
        ("localhost", True), ("LOCALHOST:50004", True), ("localhost.:80", True),
        ("127.0.0.1:50004", True), ("[::1]:50004", True), ("192.0.2.7", True),
        ("monitor.example.com", True), ("a.b.example.net:8080", True),
        ("example.net", False), ("evil.test", False), ("localhost.evil.test", False),
        ("monitor.example.com.evil.test", False), ("", False), (None, True),
    ])
    def test_names_listed_and_addresses_only(self, host: str | None, allowed: bool) -> None:
        """Listed names, names under a ``*.`` domain and IP literals pass; any other name
        (what DNS rebinding sends) does not; no Host at all is no browser."""
        policy = RequestPolicy(["localhost", "monitor.example.com", "*.example.net"])
        assert policy.host_allowed(host) is allowed

    def test_star_allows_every_name(self) -> None:
        """``*`` switches the check off (for a server reached by names that change)."""
        assert RequestPolicy(["*"]).host_allowed("anything.test")

    def test_config_checks_entries(self) -> None:
        """http_hosts and trusted_proxies entries are checked when the config loads."""
        with pytest.raises(ConfigError, match=r"hb.yaml: http_hosts: 'bad host' is not"):
            parse_config(ServerConfig, "http_hosts: [localhost, bad host]\n", "hb.yaml")
        with pytest.raises(ConfigError, match=r"hb.yaml: trusted_proxies: '10.0.0/8' is not"):
            parse_config(ServerConfig, "trusted_proxies: [10.0.0/8]\n", "hb.yaml")
        config = parse_config(ServerConfig, "http_hosts: ['*.example.com', '*']\n"
                              "trusted_proxies: [127.0.0.1, 10.0.0.0/8, '::1']\n", "hb.yaml")
        assert (config.http_hosts, config.trusted_proxies) == (
            ["*.example.com", "*"], ["127.0.0.1", "10.0.0.0/8", "::1"])
        assert ServerConfig().http_hosts == ["localhost"]


class ClientAddressTests:
    def test_forwarded_for_counts_only_from_trusted_proxies(self) -> None:
        """Without trusted proxies, or from a peer that is not one, the peer is the client;
        behind a trusted proxy, the last address it did not add itself."""
        policy = RequestPolicy(trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
        assert RequestPolicy().client("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"
        assert policy.client("198.51.100.2", ["203.0.113.9"]) == "198.51.100.2"
        assert policy.client("127.0.0.1", ["203.0.113.9"]) == "203.0.113.9"
        assert policy.client("127.0.0.1", ["6.6.6.6, 203.0.113.9, 10.1.2.3"]) == "203.0.113.9"
        assert policy.client("127.0.0.1", ["6.6.6.6", "203.0.113.9"]) == "203.0.113.9"
        assert policy.client("127.0.0.1", []) == "127.0.0.1"
        assert policy.client("127.0.0.1", ["10.0.0.1, 10.0.0.2"]) == "10.0.0.1"
        assert policy.client("127.0.0.1", ["not-an-ip"]) == "127.0.0.1"

    def test_ipv6_clients_count_by_slash_64(self) -> None:
        """A throttle's key is an IPv4 address or an IPv6 /64 (mapped IPv4 as IPv4)."""
        assert [address_key(a) for a in (
            "192.0.2.7", "2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3", "2001:db8:1:3::1",
            "::ffff:192.0.2.7", "fe80::1%eth0", "junk")] == [
            "192.0.2.7", "2001:db8:1:2::/64", "2001:db8:1:2::/64", "2001:db8:1:3::/64",
            "192.0.2.7", "fe80::/64", "junk"]


class SiteTests:
    @pytest.mark.parametrize(("origin", "fetch_site", "refused"), [
        (None, None, None),
        ("http://127.0.0.1:50004", None, None),
        ("http://127.0.0.1:50004", "same-origin", None),
        (None, "none", None),
        ("http://127.0.0.1:80", None, "Origin: http://127.0.0.1:80"),
        ("https://127.0.0.1:50004", None, "Origin: https://127.0.0.1:50004"),
        ("http://evil.test", None, "Origin: http://evil.test"),
        ("null", None, "Origin: null"),
        (None, "cross-site", "Sec-Fetch-Site: cross-site"),
        (None, "same-site", "Sec-Fetch-Site: same-site"),
    ])
    def test_changes_from_another_site(self, origin: str | None, fetch_site: str | None,
                                       refused: str | None) -> None:
        """A change is another site's when Origin names another origin (scheme, host,
        port; opaque ``null`` too) or Sec-Fetch-Site says so; absent headers are no browser."""
        assert RequestPolicy.cross_site(origin, fetch_site, "http://127.0.0.1:50004") \
            == refused

    @pytest.mark.parametrize(("peer", "host", "forwarding", "local"), [
        ("127.0.0.1", "127.0.0.1:50004", False, True),
        ("127.0.0.1", "localhost:50004", False, True),
        ("::1", "[::1]:50004", False, True),
        ("127.0.0.1", None, False, True),
        ("127.0.0.1", "evil.test:50004", False, False),
        ("127.0.0.1", "monitor.example.com", False, False),
        ("127.0.0.1", "127.0.0.1:50004", True, False),
        ("192.0.2.7", "127.0.0.1:50004", False, False),
    ])
    def test_local_means_loopback_to_loopback_through_no_proxy(
            self, peer: str, host: str | None, forwarding: bool, local: bool) -> None:
        """Local: a loopback peer, a loopback Host (a rebound name is not), no proxy header."""
        assert RequestPolicy.local(peer, host, forwarding) is local
