"""Dependency direction: the agent never loads server code; pure cores load no Twisted."""

from __future__ import annotations

import json
import subprocess
import sys

LOADED = """
import importlib, json, pkgutil, sys
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for found in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        importlib.import_module(found.name)
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(*modules: str) -> list[str]:
    """Every module loaded, in a fresh interpreter, by importing ``modules`` and all below."""
    out = subprocess.run([sys.executable, "-c", LOADED, *modules], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    names: list[str] = json.loads(out)
    return names


def test_agent_loads_nothing_of_the_server() -> None:
    """The agent, its plugins, its config schema and the `heartbeat` CLI load no server
    module and not the server's config schema."""
    loaded = _loaded("heartbeat.agent", "heartbeat.cli", "heartbeat.config.agent")
    server = [name for name in loaded if name.startswith(
        ("heartbeat.server", "heartbeat.config.server", "heartbeat.config.masking"))]
    assert ("heartbeat.agent.tap" in loaded, server) == (True, [])


def test_pure_cores_load_no_twisted() -> None:
    """The config package, the settings loader and the threshold engine load no Twisted
    (so no reactor): they are tested with plain values."""
    loaded = _loaded("heartbeat.config", "heartbeat.server.settings",
                     "heartbeat.server.thresholds")
    assert ("heartbeat.server.thresholds.engine" in loaded,
            [name for name in loaded if name.split(".")[0] == "twisted"]) == (True, [])


def test_the_server_starts_without_what_only_some_requests_use() -> None:
    """`twistd heartbeat` imports prometheus_client at the first scrape and treq with the
    first web notification channel, not at every start (0.3 s of CPU between them)."""
    out = subprocess.run(
        [sys.executable, "-c", "import json, sys, heartbeat.server.tap; "
                               "print(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True, timeout=60).stdout
    loaded = json.loads(out)
    assert "heartbeat.server.compose" in loaded
    assert [name for name in loaded if name.split(".")[0] in (
        "prometheus_client", "treq") or name == "twisted.web.client"] == []
