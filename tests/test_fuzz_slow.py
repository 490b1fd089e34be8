"""Coverage-guided fuzzing, bounded: ``pytest -m slow`` (``make fuzz`` runs the long ones)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.targets import TARGETS

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).resolve().parent.parent / "fuzz" / "run.py"


RUNS = {"server": 2_000}
"""Executions per target (default 50,000): the whole server costs milliseconds each."""
OPTIONS = {"server": ["--max-len", "8192"]}
"""A sequence of datagrams needs room (make fuzz gives it the same)."""


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_finds_no_escape(target: str, tmp_path: Path) -> None:
    """Coverage-guided executions of the target: no exception but the parser's own, no
    broken invariant."""
    pytest.importorskip("atheris")
    runs = RUNS.get(target, 50_000)
    result = subprocess.run([sys.executable, str(RUNNER), target, "--runs", str(runs),
                             "--seconds", "300", *OPTIONS.get(target, [])], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"fuzz: {target}: {runs:,} executions" in result.stdout
    assert result.stdout.rstrip().endswith("0 escapes")
    assert list(tmp_path.iterdir()) == []  # no crash-* file


def test_an_interrupted_run_still_counts_its_executions(tmp_path: Path) -> None:
    """SIGINT (how a long run is ended) reaches libFuzzer, which prints its statistics:
    Python's own handler would end the worker with a KeyboardInterrupt and no count."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with subprocess.Popen(
            [sys.executable, str(RUNNER), "--worker", "--runs", "100000000", "--seconds", "300",
             "--max-len", "256", "--timeout", "60", "protocol", str(corpus)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as worker:
        try:
            assert worker.stdout is not None
            for line in worker.stdout:  # until libFuzzer has started fuzzing
                if line.startswith("#") and "INITED" in line:
                    break
            worker.send_signal(signal.SIGINT)
            rest = worker.stdout.read()
            assert worker.wait(timeout=60) != 0
        finally:
            worker.kill()
    assert "run interrupted" in rest
    assert "stat::number_of_executed_units:" in rest
