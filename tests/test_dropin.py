"""The twistd dropin: both service makers are found, editable and after a plain install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_both_tapnames_found_by_getplugins() -> None:
    """getPlugins(IServiceMaker) finds 'heartbeat' and 'heartbeat-agent' (editable install)."""
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {m.tapname: m.module for m in getPlugins(IServiceMaker)
              if m.tapname.startswith("heartbeat")}
    assert makers == {"heartbeat": "heartbeat.server.tap",
                      "heartbeat-agent": "heartbeat.agent.tap"}


@pytest.mark.integration
def test_plain_pip_install_into_fresh_venv(tmp_path: Path) -> None:
    """After `pip install .` (not editable) in a new venv, twistd lists both commands."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.rst"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "dropin.cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    install = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", str(source)],
                             check=False, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    listing = subprocess.run([str(bin_dir / "twistd"), "--help"], check=False, capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
    commands = [line.split()[0] for line in listing.stdout.splitlines()
                if line.startswith("    heartbeat")]
    assert commands == ["heartbeat", "heartbeat-agent"]
    plugins = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "from heartbeat.agent.plugin import discover_plugins as d; print(len(d([], 'x')))"],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert plugins.stdout.strip() == "9", plugins.stderr
    help_text = subprocess.run([str(bin_dir / "heartbeat"), "send", "--help"],
                               check=False, capture_output=True, text=True, timeout=60,
                               cwd=tmp_path)
    assert help_text.returncode == 0 and "--boot" in help_text.stdout
