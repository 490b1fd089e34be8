"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import PostgresCluster, postgres_bin
from tests.support import ServerProcess


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
