"""zfs_monitor: parsers on real recorded zpool outputs, and the plugin with a stand-in zpool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from heartbeat.agent import zfs
from heartbeat.agent.plugin import PluginContext, PluginOptions, PluginScheduler, discover_plugins
from heartbeat.config.loader import parse_section
from tests.agent_fakes import AgentReactor, sync_threads

FIXTURES = Path(__file__).parent / "fixtures" / "zfs"
TELEGRAF = ("name", "health", "size", "alloc", "free", "frag", "cap", "dedup")


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_list_default_columns_legacy_suffixes() -> None:
    """Old FreeBSD prints 1% and 1.00x despite -p; both pools parse to plain numbers."""
    assert zfs.parse_list(read("zpool-list-Hp-two-pools-freebsd-legacy.txt"),
                          zfs.DEFAULT_LIST_COLUMNS) == {
        "data": {"health": "ONLINE", "health_ok": 1, "size": 996432412672,
                 "alloc": 18496188416, "free": 977936224256, "capacity": 1,
                 "fragmentation": 1, "dedup_ratio": 1.0},
        "zroot": {"health": "ONLINE", "health_ok": 1, "size": 117037858816,
                  "alloc": 10298671104, "free": 106739187712, "capacity": 8,
                  "fragmentation": 4, "dedup_ratio": 1.0},
    }


def test_list_header_sets_columns_and_degraded_health() -> None:
    """Space-padded output with a header: columns from the header, DEGRADED -> health_ok 0."""
    pools = zfs.parse_list(read("zpool-list-p-two-pools-degraded.txt"))
    assert pools["store"] == {"health": "DEGRADED", "health_ok": 0, "size": 9981503995904,
                              "alloc": 3046184919040, "free": 6935319076864, "capacity": 30,
                              "fragmentation": 9, "dedup_ratio": 1.0}
    assert (pools["zroot"]["health_ok"], pools["zroot"]["capacity"]) == (1, 76)


def test_list_skips_vdev_and_group_rows() -> None:
    """-v output: indented vdevs and logs/cache group rows are not pools."""
    assert list(zfs.parse_list(read("zpool-list-pvL-degraded-logs-cache.txt"))) == ["rpool"]
    assert list(zfs.parse_list(read("zpool-list-HvPp-one-pool-mirror.txt"),
                               zfs.DEFAULT_LIST_COLUMNS)) == ["pool_0"]


def test_list_other_column_order_and_unavailable_pool() -> None:
    """-o order is honoured; a pool that cannot be opened has only its health."""
    four = zfs.parse_list(read("zpool-list-Hp-o-telegraf-order-freenas-four-pools.txt"),
                          TELEGRAF)
    assert {n: (p["fragmentation"], p["capacity"], p["dedup_ratio"]) for n, p in
            four.items()} == {"freenas-boot": (None, 6, 1.0), "red1": (8, 12, 1.83),
                              "temp1": (38, 54, 1.28), "temp2": (12, 20, 1.0)}
    assert zfs.parse_list(read("zpool-list-Hp-o-telegraf-order-unavail.txt"), TELEGRAF) == {
        "temp2": {"health": "UNAVAIL", "health_ok": 0, "size": None, "alloc": None,
                  "free": None, "capacity": None, "fragmentation": None, "dedup_ratio": None}}


def test_iostat_takes_first_report_only() -> None:
    """The first iostat line is the since-import average; later reports are ignored."""
    assert zfs.parse_iostat(read("zpool-iostat-Hp-1-5-run1.txt")) == {
        "zpool": {"read_ops": 64, "write_ops": 12, "read_bytes": 281656, "write_bytes": 308598}}


@pytest.mark.parametrize(("name", "pool", "state", "errors", "data_errors", "unhealthy"), [
    ("zpool-status-online-raidz2-scrub-done.txt", "tank", "ONLINE", (0, 0, 0), 0, 0),
    ("zpool-status-online-raidz2-write-error-9P.txt", "tank", "ONLINE", (0, 1, 0), 0, 0),
    ("zpool-status-degraded-mirror-faulted.txt", "local-zfs", "DEGRADED", (1, 29, 4), 0, 2),
    ("zpool-status-degraded-mirror-removed.txt", "dummy", "DEGRADED", (0, 0, 0), 0, 2),
    ("zpool-status-p-degraded-mirror-unavail-was.txt", "mypool", "DEGRADED", (0, 0, 100980),
     0, 2),
    ("zpool-status-degraded-mirror-unavail-corrupted-data.txt", "broken", "DEGRADED",
     (0, 0, 0), 0, 2),
    ("zpool-status-online-pool-with-faulted-disk.txt", "tank", "ONLINE", (12, 753, 83), 0, 1),
    ("zpool-status-suspended.txt", "vmdata", "SUSPENDED", (8, 126, 0), 67, 1),
    ("zpool-status-v-unavail-suspended-zol07.txt", "dozer", "UNAVAIL", (6, 0, 0), None, 1),
    ("zpool-status-faulted-pool-corrupted-data-2010.txt", "tankmds1", "FAULTED", (0, 0, 0),
     None, 1),
    ("zpool-status-faulted-io-failures-docs-example.txt", "test", "FAULTED", (0, 7, 0), 1, 1),
    ("zpool-status-resilver-in-progress.txt", "tresor1", "DEGRADED", (0, 0, 0), 0, 3),
    ("zpool-status-v-permanent-errors-abbrev-counts-zol065.txt", "volumes", "ONLINE",
     (0, 0, 8376), 2, 0),
    ("zpool-status-x-data-errors-count.txt", "zstore", "ONLINE", (0, 0, 0), 31, 0),
    ("zpool-status-data-errors-nonroot.txt", "jeremy", "ONLINE", (0, 0, 0), 1, 0),
    ("zpool-status-permanent-errors-metadata.txt", "nas", "ONLINE", (0, 0, 0), 2, 0),
])
def test_status_fixtures(  # noqa: PLR0917 - one parameter per column
        name: str, pool: str, state: str, errors: tuple[int, int, int],
                         data_errors: int | None, unhealthy: int) -> None:
    """State, leaf-vdev error sums, data errors and unhealthy vdev count per recorded output."""
    status = zfs.parse_status(read(name))[pool]
    summary = status.to_json()
    assert (status.state, (summary["read_errors"], summary["write_errors"],
                           summary["checksum_errors"]), summary["data_errors"],
            summary["vdevs_unhealthy"]) == (state, errors, data_errors, unhealthy)


def test_status_two_pools_and_vdev_tree() -> None:
    """Several pools parse separately, with each vdev's depth, state and counts."""
    pools = zfs.parse_status(read("zpool-status-online-scrub-done-two-pools.txt"))
    assert list(pools) == ["rpool", "wilbur"]
    degraded = zfs.parse_status(read("zpool-status-degraded-mirror-faulted.txt"))["local-zfs"]
    assert [v.to_json() for v in degraded.vdevs] == [
        {"name": "local-zfs", "state": "DEGRADED", "depth": 0, "read": 0, "write": 0,
         "cksum": 0, "note": None},
        {"name": "mirror-0", "state": "DEGRADED", "depth": 1, "read": 0, "write": 0,
         "cksum": 0, "note": None},
        {"name": degraded.vdevs[2].name, "state": "ONLINE", "depth": 2, "read": 0, "write": 0,
         "cksum": 0, "note": None},
        {"name": degraded.vdevs[3].name, "state": "FAULTED", "depth": 2, "read": 1,
         "write": 29, "cksum": 4, "note": "too many errors"},
    ]
    assert degraded.scan is not None and degraded.scan.startswith("resilvered 46.3G")


def fake_zpool(directory: Path, list_file: str, status_file: str, iostat_file: str) -> str:
    """A stand-in zpool that prints recorded outputs; checks the arguments it gets."""
    path = directory / "zpool"
    path.write_text(f"""#!/bin/sh
case "$*" in
  "list -Hp -o name,size,alloc,free,frag,cap,dedup,health") cat '{list_file}' ;;
  "iostat -Hp") head -n 1 '{iostat_file}' ;;
  "status -p") cat '{status_file}' ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
""")
    path.chmod(0o755)
    return str(path)


@pytest_twisted.ensureDeferred
async def test_plugin_merges_list_iostat_status(tmp_path: Path) -> None:
    """The plugin runs the three zpool commands and sends one record per pool."""
    from twisted.internet import reactor

    listed = tmp_path / "list.txt"
    listed.write_text("zpool\t1992864825344\t1483556872192\t509307953152\t9\t74\t1.00\t"
                      "DEGRADED\n")
    status = tmp_path / "status.txt"
    status.write_text(read("zpool-status-degraded-mirror-faulted.txt").replace(
        "local-zfs", "zpool"))
    zpool = fake_zpool(tmp_path, str(listed), str(status),
                       str(FIXTURES / "zpool-iostat-Hp-1-5-run1.txt"))
    cls = discover_plugins([], "x")["zfs_monitor"]
    plugin = cls(parse_section(cls.Options, {"zpool_bin": zpool}, "x"),
                 PluginContext(reactor, sync_threads))
    data = await plugin.collect()
    pool = data["pools"]["zpool"]
    vdevs = pool.pop("vdevs")
    assert data["pool_count"] == 1 and data["pools_unhealthy"] == 1
    assert pool == {
        "health": "DEGRADED", "health_ok": 0, "size": 1992864825344,
        "alloc": 1483556872192, "free": 509307953152, "capacity": 74, "fragmentation": 9,
        "dedup_ratio": 1.0, "read_ops": 64, "write_ops": 12, "read_bytes": 281656,
        "write_bytes": 308598, "read_errors": 1, "write_errors": 29, "checksum_errors": 4,
        "data_errors": 0, "vdevs_unhealthy": 2, "scan": pool["scan"],
        "status": pool["status"]}
    assert [v["state"] for v in vdevs] == ["DEGRADED", "ONLINE", "FAULTED"]


def test_absent_zpool_reported_unavailable_once() -> None:
    """Without zpool the plugin says so once and stops: no error every interval."""
    reactor = AgentReactor()
    cls = discover_plugins([], "x")["zfs_monitor"]
    plugin = cls(parse_section(cls.Options, {"zpool_bin": "/nonexistent/zpool",
                                             "interval": 10}, "x"),
                 PluginContext(reactor, sync_threads))
    received: list[tuple[str, Any]] = []
    service = PluginScheduler([plugin], lambda n, d: received.append((n, d)), reactor)
    service.startService()
    for _ in range(5):
        reactor.advance(10)
    assert received == [("zfs_monitor", {
        "available": False, "reason": "not found or not executable: /nonexistent/zpool"})]
    service.stopService()
    assert isinstance(plugin.options, PluginOptions)
