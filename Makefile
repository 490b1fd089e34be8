# heartbeat: set-up, run and test from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= etc/heartbeat.yaml
AGENT ?= 1
AGENT_CONFIG ?= etc/heartbeat-agent.yaml
# Two stamps: running needs the package alone; testing and linting add their extras.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
FUZZ_STAMP := $(VENV)/.fuzz-installed
# make test: pytest's workers and how they share tests out; PYTEST_ARGS adds to them.
# One more worker than this 2-core machine has cores, taking tests as they free up:
# many tests wait on a twistd, PostgreSQL or Chromium child (quiet machine, 1,801 tests:
# 340 s with 2 workers, 299 s with 3 and worksteal; docs/PERFORMANCE.md).
PYTEST_WORKERS ?= 3
PYTEST_DIST ?= worksteal
# make fuzz: executions of protocol.decode, of the whole server (datagram sequences into
# the real service tree, fuzz/server.py), and of each other target.
FUZZ_RUNS ?= 1000000
FUZZ_SERVER_RUNS ?= 1000000
FUZZ_OTHER_RUNS ?= 200000

.PHONY: install run test lint fuzz bench clean vendor-uplot

$(RUN_STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("heartbeat needs Python 3.11+") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
	touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

# make install: everything, tests and linters too (make run needs only $(RUN_STAMP)).
install: $(STAMP)

# The server, plus a local agent reporting this machine (AGENT=0: the server alone).
run: $(RUN_STAMP)
	mkdir -p var
	$(BIN)/python scripts/make_run.py --config $(CONFIG) \
		$(if $(filter 0 no false off,$(AGENT)),,--agent-config $(AGENT_CONFIG))

# Python keeps its bytecode cache (__pycache__, git-ignored) even where the environment sets
# PYTHONDONTWRITEBYTECODE: the suite starts a few hundred Python processes (its workers,
# twistd, agents), and each would compile heartbeat's sources again, about 0.4 s of CPU.
test: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE \
		$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Coverage-guided fuzzing with atheris (docs/SECURITY.md); bounded by FUZZ_RUNS.
$(FUZZ_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,lint,fuzz]'
	touch $@

fuzz: $(FUZZ_STAMP)
	$(BIN)/python fuzz/run.py protocol --runs $(FUZZ_RUNS)
	$(BIN)/python fuzz/run.py server --runs $(FUZZ_SERVER_RUNS) --max-len 8192 --seconds 86400 --timeout 60
	$(BIN)/python fuzz/run.py reply config perfdata thresholds --runs $(FUZZ_OTHER_RUNS)

# The web UI's chart library, from the npm registry (needs npm); see the note it writes.
vendor-uplot:
	scripts/vendor_uplot.sh

clean:
	rm -rf build dist src/*.egg-info var .pytest_cache .mypy_cache .ruff_cache
