"""BIND ``named`` on a loopback port with one dynamic zone and a TSIG key, for DNS tests.

Recipe (docs/DNS.md, ../shared/recipes.md): unprivileged ``named -g -4 -n 1`` with no
rndc port, ``dnssec-validation no`` (else it tries the root servers) and a writable
zone folder (the .jnl journal lands beside the zone file). ``NAMED=/path`` overrides the
binary, e.g. an unconfined copy on hosts whose AppArmor profile pins named to /etc/bind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support import free_port

__all__ = ["DIG", "NAMED", "NSUPDATE", "NamedServer", "tsig_key"]


def _tool(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((path for path in fallbacks if os.access(path, os.X_OK)), None)


NAMED = os.environ.get("NAMED") or _tool("named", "/usr/sbin/named")
TSIG_KEYGEN = _tool("tsig-keygen", "/usr/sbin/tsig-keygen")
NSUPDATE = _tool("nsupdate", "/usr/bin/nsupdate")
DIG = _tool("dig", "/usr/bin/dig")

ZONE_FILE = """$TTL 60
@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60
@ IN NS ns.{zone}.
ns IN A 127.0.0.1
"""

CONF = """include "{key}";
options {{
    directory "{dir}";
    pid-file none;
    session-keyfile none;
    dnssec-validation no;
    recursion no;
    notify no;
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
}};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "{dir}/{zone}.zone";
    update-policy {{ grant ddns-key zonesub ANY; }};
}};
"""


def tsig_key(path: Path, name: str = "ddns-key") -> Path:
    """A fresh hmac-sha256 key in named.conf syntax (also what ``nsupdate -k`` reads)."""
    assert TSIG_KEYGEN is not None
    path.write_bytes(subprocess.run([TSIG_KEYGEN, "-a", "hmac-sha256", name], check=True,
                                    capture_output=True, timeout=10).stdout)
    return path


class NamedServer:
    """One named process serving ``zone`` on 127.0.0.1:``port`` (UDP and TCP)."""

    def __init__(self, directory: Path, zone: str = "dyn.test") -> None:
        self.directory = directory
        self.zone = zone
        self.key = directory / "ddns.key"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "named.log"

    def start(self) -> NamedServer:
        assert NAMED is not None and DIG is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        tsig_key(self.key)
        (self.directory / f"{self.zone}.zone").write_text(ZONE_FILE.format(zone=self.zone))
        for _ in range(5):  # a port taken on UDP or TCP makes named exit: take another
            self.port = free_port()
            conf = self.directory / "named.conf"
            conf.write_text(CONF.format(key=self.key, dir=self.directory, port=self.port,
                                        zone=self.zone))
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", str(conf)],
                                                stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                if self.query(self.zone, "SOA"):
                    return self
                time.sleep(0.02)
            self.stop()
        raise AssertionError(f"named did not start:\n{self.log.read_text(errors='replace')}")

    def query(self, name: str, rtype: str) -> list[str]:
        """``dig +short`` answers for ``name`` ``rtype``, sorted."""
        assert DIG is not None
        result = subprocess.run(
            [DIG, "@127.0.0.1", "-p", str(self.port), name, rtype, "+short", "+time=1",
             "+tries=1"], capture_output=True, text=True, timeout=10, check=False)
        return sorted(line for line in result.stdout.splitlines() if line and ";" not in line)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
