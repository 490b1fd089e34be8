"""Fixtures shared by the whole suite."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.postgres import PostgresCluster, postgres_bin
from tests.support import ServerProcess

# No example may fail for taking long: a loaded CI machine stretches any one of them (one
# took 613 ms against hypothesis's default 200 ms deadline, then 17 ms when replayed).
settings.register_profile("heartbeat", deadline=None)
settings.load_profile("heartbeat")


@pytest.fixture(autouse=True)
def automatic_collections() -> Iterator[None]:
    """Each test starts with Python's automatic garbage collections on, whatever one
    before it left running (a server's ``CollectorService`` turns them off while it
    runs; tests/test_collector.py checks that stopping it turns them back on)."""
    gc.enable()
    yield


def _long(item: pytest.Item) -> float:
    """The seconds of a test marked ``long(seconds)``; 0 for any other."""
    mark = item.get_closest_marker("long")
    return 0.0 if mark is None else float(mark.args[0])


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they do
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``long(seconds)`` start first, each at the head of one worker's share.

    pytest-xdist's worksteal (``make test``) hands each worker a contiguous share of the
    collection and lets an idle worker steal the back half of the longest queue: a test
    at the head of a share starts at once, one in the middle may be stolen late and end
    the run alone (the fresh-venv install did: a minute after every other test). The
    long tests are dealt longest first to the share with the least of them so far.
    """
    long = sorted((item for item in items if _long(item)), key=_long, reverse=True)
    if not long:
        return
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    lanes: list[list[pytest.Item]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for item in long:
        lane = loads.index(min(loads))
        lanes[lane].append(item)
        loads[lane] += _long(item)
    chosen = set(long)
    rest = iter([item for item in items if item not in chosen])
    ordered: list[pytest.Item] = []
    remaining = len(items)
    for lane, heads in enumerate(lanes):
        share = remaining // (workers - lane)  # worksteal's own first split
        ordered += heads
        ordered += [next(rest) for _ in range(max(0, share - len(heads)))]
        remaining -= share
    ordered += list(rest)
    items[:] = ordered


@pytest.fixture(autouse=True)
def clean_reactor(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves delayed calls in the global reactor (e.g. a treq pool)."""
    yield
    if "twisted" not in request.keywords and not request.node.get_closest_marker("twisted"):
        from twisted.internet import reactor

        calls = [c for c in reactor.getDelayedCalls() if c.active()]  # type: ignore[attr-defined]
        for call in calls:
            call.cancel()
        assert not calls, f"test left delayed calls in the reactor: {calls}"


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start real ``twistd -n heartbeat`` processes; all are stopped at teardown."""
    started: list[ServerProcess] = []

    def start(directory: Path | None = None, **overrides: Any) -> ServerProcess:
        server = ServerProcess(directory or tmp_path, **overrides)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Any) -> ServerProcess:
    """One real server on free loopback ports with its state under tmp_path."""
    return server_factory()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One real PostgreSQL server for the test session (tests/postgres.py)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql, as .ci/apt-install does")
    cluster = PostgresCluster(bindir).start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A new empty database of the session's PostgreSQL, dropped after the test."""
    url = postgres_cluster.new_database()
    yield url
    postgres_cluster.drop_database(url)
