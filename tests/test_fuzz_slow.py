"""Coverage-guided fuzzing, bounded: ``pytest -m slow`` (``make fuzz`` runs the long ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.targets import TARGETS

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).resolve().parent.parent / "fuzz" / "run.py"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_finds_no_escape(target: str, tmp_path: Path) -> None:
    """50,000 coverage-guided executions of the target: no exception but the parser's own."""
    pytest.importorskip("atheris")
    result = subprocess.run([sys.executable, str(RUNNER), target, "--runs", "50000",
                             "--seconds", "300"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"fuzz: {target}: 50,000 executions" in result.stdout
    assert result.stdout.rstrip().endswith("0 escapes")
    assert list(tmp_path.iterdir()) == []  # no crash-* file
