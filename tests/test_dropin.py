"""The twistd dropin: both service makers are found, editable and after a plain install."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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
@pytest.mark.long(70)
def test_hb_install_plain_install_into_fresh_venv_then_upgrade(tmp_path: Path) -> None:
    """scripts/hb_install.sh makes a venv with a plain (non-editable) install: twistd lists
    both commands, the nine plugins are packaged; a second run upgrades in place, and
    fails saying so when the version the UPD asked for is not the one installed."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.rst"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "dropin.cache"))
    venv = tmp_path / "venv"
    command = [str(ROOT / "scripts/hb_install.sh"), "--venv", str(venv), "--source",
               str(source)]
    install = subprocess.run(command, check=False, capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-2000:]
    import heartbeat

    assert install.stdout.splitlines()[-1] == (
        f"heartbeat {heartbeat.__version__} installed in {venv}")
    assert list(venv.glob("lib/*/site-packages/__editable__*")) == []
    bin_dir = venv / "bin"
    listing = subprocess.run([str(bin_dir / "twistd"), "--help"], check=False,
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    commands = [line.split()[0] for line in listing.stdout.splitlines()
                if line.startswith("    heartbeat")]
    assert commands == ["heartbeat", "heartbeat-agent"]
    plugins = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import heartbeat.agent.plugin as p; "
         f"print(p.__file__.startswith({str(venv)!r}), len(p.discover_plugins([], 'x')))"],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert plugins.stdout.split() == ["True", "9"], plugins.stderr
    # As an agent's update_command: the shell stands in for the agent (the script's
    # parent), which --exit-agent stops once the script has ended.
    agent = subprocess.Popen(
        ["sh", "-c", '"$0" "$@"; echo "rc=$?"; exec sleep 60', *command, "--exit-agent"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "HEARTBEAT_VERSION": "99.0"})
    out, err = agent.communicate(timeout=300)
    assert (agent.returncode, out.splitlines()[-2:], err.splitlines()[-1:]) == (
        -signal.SIGTERM,
        [f"agent (pid {agent.pid}) stops in 5 s to start the new version", "rc=1"],
        [f"hb_install: installed {heartbeat.__version__}, not the requested version 99.0"])
    help_text = subprocess.run([str(bin_dir / "heartbeat"), "send", "--help"],
                               check=False, capture_output=True, text=True, timeout=60,
                               cwd=tmp_path)
    assert help_text.returncode == 0 and "--boot" in help_text.stdout
