"""The leader's advisory lock and the store's buffer, on a real PostgreSQL (tests/postgres.py).

The services run on a Clock with their blocking calls inline (ImmediateWorker),
so the test decides when each tries; the lock, its sessions and the outage are
PostgreSQL's own.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from twisted.internet.task import Clock

from heartbeat.config.server import ServerConfig
from heartbeat.events import RECEIVED, Event, EventBus
from heartbeat.server.compose import wire
from heartbeat.server.leader import LeaderService, LockSession
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import HostRecorder, StoreService
from heartbeat.server.tables import PLUGIN_HISTORY
from tests.postgres import PostgresCluster
from tests.support import wait_until

pytestmark = pytest.mark.integration


def _leader(url: str, node: str, clock: Clock, changes: list[tuple[str, bool]]) -> LeaderService:
    session = LockSession(lambda: psycopg.connect(
        url, autocommit=True, application_name=f"heartbeat {node} leader"))
    leader = LeaderService(node, clock, session=session, worker=ImmediateWorker(), interval=1.0)
    leader.on_change(lambda leading: changes.append((node, leading)))
    return leader


def _backend_pid(url: str, node: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                           (f"heartbeat {node} leader",)).fetchone()
        assert row is not None
        return int(row[0])


def test_one_server_leads_and_another_takes_over_when_its_session_ends(
        postgres_url: str) -> None:
    clock = Clock()
    changes: list[tuple[str, bool]] = []
    one = _leader(postgres_url, "one", clock, changes)
    two = _leader(postgres_url, "two", clock, changes)
    one.startService()
    two.startService()
    assert (one.leading, two.leading, changes) == (True, False, [("one", True)])
    assert (one.to_json()["leader_node"], two.to_json()["leader_node"]) == ("one", "one")

    # The leader's connection is cut (as when its host or PostgreSQL drops it): it stops
    # leading at its next check, and whoever tries first then takes the lock.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(postgres_url, "one"),))
    clock.advance(1.0)
    assert one.leading is False or two.leading is False
    assert [c for c in changes[1:] if c == ("one", False)] == [("one", False)]
    clock.advance(1.0)
    assert [one.leading, two.leading].count(True) == 1
    holder = "one" if one.leading else "two"
    assert (one.leader_node, two.leader_node) == (holder, holder)

    # The leader stops (its process ends): the other one leads at its next try.
    leading, other = (one, two) if one.leading else (two, one)
    leading.stopService()
    # PostgreSQL releases the lock when the closed session's backend has exited: a try or
    # a few later (each a second of the leader's clock; here as fast as they run).
    assert wait_until(lambda: (clock.advance(1.0), other.leading)[1])
    assert other.leader_node == other.node
    other.stopService()


def test_the_store_keeps_its_writes_while_postgresql_is_down(
        postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    """PostgreSQL stopped: the batch is kept and tried again with a backoff, the history
    waits in memory, all is committed once it is back; nothing accepted is lost, the
    leader steps down and comes back."""
    from heartbeat.server import postgres

    clock = Clock()
    backend = postgres.open_store(ServerConfig(store_url=postgres_url, node_name="t"))
    store = StoreService(backend, ImmediateWorker(), clock, 0.5, 600.0,
                         reader=ImmediateWorker(), retry_cap=2.0)
    registry = Registry(grace=10.0, default_interval=30.0)
    bus = EventBus(on_error=lambda s, e, error: (_ for _ in ()).throw(error))
    recorder = HostRecorder(registry, store, 3600.0, 10_000)
    wire(bus, recorder=recorder)
    changes: list[tuple[str, bool]] = []
    leader = _leader(postgres_url, "t", clock, changes)
    store.startService()
    leader.startService()
    sent = 0

    def plg() -> None:
        nonlocal sent
        message: dict[str, Any] = {"ID": "PLG", "name": "web1", "seq": sent, "ts": 1000.0 + sent,
                                   "plugins": {"cpu": {"load": sent}}}
        bus.publish(Event(RECEIVED, "web1", clock.seconds(), {"message": message}))
        sent += 1

    plg()
    clock.advance(0.5)
    assert store.to_json()["last_error"] is None
    postgres_cluster.stop("immediate")
    try:
        for _ in range(20):  # 10 s of clock time: PLGs every 0.5 s
            plg()
            clock.advance(0.5)
        status = store.to_json()
        assert status["last_error"] is not None and status["dropped_rows"] == 0
        assert status["backlog"] > 0 and status["behind_seconds"] > 5.0
        assert 1 < store.failures < 20  # tried again with a growing wait, not every flush
        assert leader.leading is False and changes[-1] == ("t", False)
    finally:
        postgres_cluster.restart()
    for _ in range(6):  # at most retry_cap later
        plg()
        clock.advance(0.5)
    assert store.to_json()["last_error"] is None and store.behind() == 0.0
    assert leader.leading is True
    seqs = sorted(row[4] for row in backend.read(lambda t: t.rows(PLUGIN_HISTORY)))
    assert seqs == list(range(sent))
    leader.stopService()
    store.stopService()
