"""Coverage-guided fuzzing of the targets of fuzz/targets.py with atheris (libFuzzer).

    .venv/bin/python fuzz/run.py TARGET [TARGET...] [--runs N] [--seconds S] [--keep DIR]

TARGET is one of the names in ``fuzz.targets.TARGETS`` (protocol, reply,
config, perfdata...). For each, a fuzzing process instruments the heartbeat
package (and PyYAML, for config) for coverage, starts from the seeds in
fuzz/corpus/TARGET and stops after N executions or S seconds, whichever comes
first. New interesting inputs grow a temporary corpus (``--keep DIR`` keeps it);
an escape (an exception other than the parser's own error type, or a broken
invariant) is saved as ``crash-<sha1>`` in the current directory and makes the
exit status non-zero. One summary line per target gives the executions, the
time and the result; libFuzzer's own output is shown with ``--verbose``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fuzz_in_this_process(target_name: str, corpus: Path, runs: int, seconds: int,
                         max_len: int, *, timeout: int = 10) -> None:
    """The worker: instrument, then hand over to libFuzzer (which exits the process)."""
    import atheris

    sys.path.insert(0, str(HERE.parent))
    with atheris.instrument_imports(include=["heartbeat", "yaml"]):
        from fuzz import targets
    # libFuzzer takes SIGINT (prints its statistics, then exits) only if no handler is
    # set: Python's own (KeyboardInterrupt) would end the run silently, or be swallowed
    # by a Deferred, when the worker was started with SIGINT not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-max_total_time={seconds}",
                   f"-max_len={max_len}", "-print_final_stats=1", f"-timeout={timeout}",
                   "-rss_limit_mb=2048", str(corpus)], targets.TARGETS[target_name])
    atheris.Fuzz()


def run(target: str, args: argparse.Namespace) -> bool:
    """Fuzz one target in a child process; print its summary; True if nothing escaped."""
    corpus = args.keep / target if args.keep else Path(tempfile.mkdtemp(prefix="fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / target
    for seed in sorted(seeds.iterdir()) if seeds.is_dir() else []:
        shutil.copy(seed, corpus / seed.name)
    started = time.monotonic()
    # The state of a target that keeps some (the whole server's store and journal): in
    # memory where there is a tmpfs, so its commits cost no disk writes.
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="fuzz-work-", dir=shm if shm.is_dir() else None))
    try:
        child = subprocess.run(
            [sys.executable, __file__, "--worker", "--runs", str(args.runs), "--seconds",
             str(args.seconds), "--max-len", str(args.max_len), "--timeout", str(args.timeout),
             target, str(corpus)],
            capture_output=True, text=True, errors="replace", check=False,
            env={**os.environ, "HEARTBEAT_FUZZ_WORK": str(work)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(corpus, ignore_errors=True)
    took = time.monotonic() - started
    output = child.stdout + child.stderr
    if args.verbose or child.returncode:
        print(output)
    found = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    executed = int(found.group(1)) if found else 0
    ok = child.returncode == 0 and found is not None
    print(f"fuzz: {target}: {executed:,} executions in {took:.0f} s "
          f"({executed / took:,.0f}/s): {'0 escapes' if ok else 'ESCAPE (see above)'}",
          flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--timeout", type=int, default=10,
                        help="seconds one input may take before it counts as a hang")
    parser.add_argument("--keep", type=Path, help="keep each grown corpus under this directory")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        target, corpus = args.targets
        fuzz_in_this_process(target, Path(corpus), args.runs, args.seconds, args.max_len,
                             timeout=args.timeout)
        return
    sys.path.insert(0, str(HERE.parent))
    from fuzz.targets import TARGETS

    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    results = [run(target, args) for target in args.targets]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
