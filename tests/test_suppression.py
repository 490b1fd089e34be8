"""The notifier's decision: maintenance, silences, acknowledgements, flapping, release."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from heartbeat.events import (
    ALERT,
    ALERT_FLAPPING,
    HOST_BOOT,
    HOST_DOWN,
    HOST_FLAPPING,
    HOST_MESSAGE,
    HOST_UP,
    JOB,
    Event,
)
from heartbeat.server.acks import HOST, AckBook, Acknowledgement
from heartbeat.server.maintenance import HostSelector, MaintenanceCalendar, MaintenanceWindow
from heartbeat.server.schedule import OneOffWindow
from heartbeat.server.silences import Silence, SilenceBook
from heartbeat.server.suppression import HeldProblem, Hold, Suppression

CPU = "cpu_monitor.cpu_percent"


def alert(level: str, previous: str = "OK", **data: Any) -> dict[str, Any]:
    return {"metric_path": CPU, "level": level, "previous": previous, "notify": True,
            "reminder": False, "cleared": False, **data}


class Fixture:
    def __init__(self) -> None:
        self.calendar = MaintenanceCalendar()
        self.silences = SilenceBook()
        self.acks = AckBook()
        self.decision = Suppression(self.calendar, self.silences, self.acks)
        self.problems: dict[tuple[str, str], str] = {}

    def window(self, start: float, end: float, *hosts: str, name: str = "patch") -> None:
        self.calendar.put(MaintenanceWindow(name, HostSelector(hosts), OneOffWindow(start, end),
                                            "UTC", comment="kernel"))

    def silence(self, start: float, end: float, host: str, metric: str = "*") -> None:
        self.silences.put(Silence("4", host, metric, start, end, "bob", "swap", start))

    def decide(self, kind: str, ts: float, host: str = "web1", **data: Any) -> Hold | None:
        if kind == ALERT and "level" not in data:
            data = alert("CRITICAL", **data)
        return self.decision.decide(Event(kind, host, ts, data), ts)

    def released(self, now: float) -> list[HeldProblem]:
        return self.decision.released(now, lambda host, key: self.problems.get((host, key)))


MAINTENANCE = Hold("maintenance", "maintenance 'patch' (kernel)", "patch")
SILENCE = Hold("silenced", "silence 4 by bob (swap)", "4")


class MaintenanceTests:
    def test_everything_about_the_host_is_held_inside_the_window(self) -> None:
        """Inside the window every notice about the host is held; outside, none is."""
        f = Fixture()
        f.window(100, 200, "web*")
        for kind, data in ((HOST_DOWN, {"reason": "timeout"}), (HOST_BOOT, {}),
                           (HOST_MESSAGE, {"level": "error"}), (ALERT, alert("WARNING")),
                           (HOST_FLAPPING, {"flapping": True})):
            assert f.decide(kind, 150, **data) == MAINTENANCE, kind
            assert f.decide(kind, 250, **data) is None, kind
        assert f.decide(HOST_DOWN, 150, host="db1") is None

    def test_problem_still_there_at_the_end_is_released_once(self) -> None:
        """A DOWN held in the window and still DOWN at its end is released, once."""
        f = Fixture()
        f.window(100, 200, "web1")
        f.decide(HOST_DOWN, 150, reason="timeout")
        f.problems["web1", "host.down"] = "DOWN"
        assert f.released(190) == []  # still inside
        assert f.released(200) == [HeldProblem("web1", "host.down", "DOWN", "maintenance",
                                               "maintenance 'patch' (kernel)", 150)]
        assert f.released(201) == []

    def test_recovery_of_a_held_problem_is_not_notified(self) -> None:
        """Down and up again inside the window: neither is notified, nothing released."""
        f = Fixture()
        f.window(100, 200, "web1")
        f.decide(HOST_DOWN, 150, reason="timeout")
        assert f.decide(HOST_UP, 160, previous="DOWN", down_for=10).reason == \
            "problem_not_notified"
        assert f.released(200) == []

    def test_problem_notified_before_the_window_is_not_repeated(self) -> None:
        """An alert notified before the window is not notified again when it ends."""
        f = Fixture()
        f.window(100, 200, "web1")
        assert f.decide(ALERT, 50) is None
        f.problems["web1", CPU] = "CRITICAL"
        assert f.decide(ALERT, 120, **alert("CRITICAL", reminder=True)) == MAINTENANCE
        assert f.released(200) == []

    def test_held_alert_changing_level_is_released_at_its_new_level(self) -> None:
        """A held alert that de-escalates inside the window is released at its level now."""
        f = Fixture()
        f.window(100, 200, "web1")
        f.decide(ALERT, 110, **alert("CRITICAL"))
        f.decide(ALERT, 120, **alert("WARNING", "CRITICAL", notify=False))
        assert f.decision.held("web1")[0].level == "WARNING"
        f.problems["web1", CPU] = "WARNING"
        assert [(h.key, h.level, h.since) for h in f.released(200)] == [(CPU, "WARNING", 110)]

    def test_gone_problems_are_dropped(self) -> None:
        """A held alert cleared (no longer reported), or gone by release time, is dropped."""
        f = Fixture()
        f.window(100, 200, "web1", "web2")
        f.decide(ALERT, 110)
        f.decide(ALERT, 120, **alert("OK", cleared=True))
        f.decide(HOST_DOWN, 130, host="web2")
        assert f.released(200) == [] and f.decision.held() == []


class ReleaseWalkTests:
    def test_a_walk_looks_at_a_slice_a_call_and_ends_where_one_call_does(self) -> None:
        """With a limit each call looks at that many held problems at most (released or
        not), and the calls together release what one call without a limit does."""
        def fleet() -> Fixture:
            f = Fixture()
            f.window(100, 200, "web*")
            f.window(100, 300, "web1?", name="longer")  # still holds web10-web19 at 200
            for n in range(25):
                event = Event(HOST_DOWN, f"web{n}", 150, {"reason": "timeout"})
                assert f.decision.decide(event, 150) is not None
                f.problems[f"web{n}", "host.down"] = "DOWN"
            del f.problems["web3", "host.down"]  # gone meanwhile
            return f

        whole = fleet().released(200)
        sliced, f, parts = [], fleet(), []
        looked: list[str] = []
        current = f.problems.get

        def counting(host: str, key: str) -> str | None:
            looked.append(host)
            return current((host, key))

        while True:
            parts.append(len(looked))
            sliced += f.decision.released(200, counting, limit=10)
            if not f.decision.releasing:
                break
        assert [b - a for a, b in pairwise(parts)] == [10, 10]
        assert len(looked) - parts[-1] == 5
        assert sliced == whole and len(whole) == 14
        assert sorted(h.host for h in f.decision.held()) == sorted(f"web1{n}" for n in range(10))

    def test_walk_again_walks_what_a_change_released_meanwhile(self) -> None:
        """A change during a walk (walk_again) brings a second walk over every problem
        still held once the first ends: what the change released goes then, once."""
        f = Fixture()
        f.window(100, 200, "web*")
        f.window(100, 300, "web0", name="longer")
        for n in range(4):
            f.decision.decide(Event(HOST_DOWN, f"web{n}", 150, {"reason": "timeout"}), 150)
            f.problems[f"web{n}", "host.down"] = "DOWN"
        first = f.decision.released(250, lambda h, k: f.problems.get((h, k)), limit=2)
        f.calendar.remove("longer")  # web0 is free now
        f.decision.walk_again()
        rest: list[HeldProblem] = []
        while f.decision.releasing:
            rest += f.decision.released(250, lambda h, k: f.problems.get((h, k)), limit=2)
        assert sorted(h.host for h in first + rest) == ["web0", "web1", "web2", "web3"]


class SilenceTests:
    def test_silence_holds_its_subjects_only(self) -> None:
        """A silence on disk metrics holds disk alerts, not CPU alerts or DOWN."""
        f = Fixture()
        f.silence(100, 200, "web*", "disk_monitor.*")
        assert f.decide(ALERT, 150, **alert("WARNING", metric_path="disk_monitor.x")) == SILENCE
        assert f.decide(ALERT, 150) is None
        assert f.decide(HOST_DOWN, 150) is None
        assert f.decide(ALERT_FLAPPING, 150, metric_path="disk_monitor.x") == SILENCE

    def test_silence_expiring_releases_what_it_held(self) -> None:
        """At expiry, an alert it held that is still active is released."""
        f = Fixture()
        f.silence(100, 200, "web1", CPU)
        f.decide(ALERT, 150)
        f.problems["web1", CPU] = "CRITICAL"
        assert [(h.reason, h.label) for h in f.released(200)] == [
            ("silenced", "silence 4 by bob (swap)")]

    def test_overlapping_holds_release_when_the_last_ends(self) -> None:
        """Window then silence: the problem is released when nothing holds it any more."""
        f = Fixture()
        f.window(100, 200, "web1")
        f.silence(150, 300, "web1")
        f.decide(ALERT, 120)
        f.problems["web1", CPU] = "CRITICAL"
        assert f.released(200) == []
        assert [h.key for h in f.released(300)] == [CPU]


class AckTests:
    def test_reminders_of_an_acknowledged_level_are_held(self) -> None:
        """Acknowledged at CRITICAL: CRITICAL reminders are held, others are not."""
        f = Fixture()
        f.acks.put(Acknowledgement("web1", CPU, "CRITICAL", "bob", "on it", 0))
        assert f.decide(ALERT, 10, **alert("CRITICAL", reminder=True)) == Hold(
            "acknowledged", "acknowledged by bob", "bob")
        assert f.decide(ALERT, 10, **alert("WARNING", reminder=True)) is None
        assert f.decide(ALERT, 10, **alert("CRITICAL", "WARNING")) is None  # a transition

    def test_acknowledged_problem_is_not_released(self) -> None:
        """A held DOWN acknowledged meanwhile is dropped without a notice at the end."""
        f = Fixture()
        f.window(100, 200, "web1")
        f.decide(HOST_DOWN, 150)
        f.acks.put(Acknowledgement("web1", HOST, "DOWN", "bob", "", 160))
        f.problems["web1", "host.down"] = "DOWN"
        assert f.released(200) == [] and f.decision.held() == []


class FlappingTests:
    def test_flapping_transitions_are_held_not_remembered(self) -> None:
        """Transitions marked flapping are held; nothing is remembered for release."""
        f = Fixture()
        assert f.decide(HOST_DOWN, 10, flapping=True) == Hold("flapping", "flapping")
        assert f.decide(HOST_UP, 11, previous="DOWN", flapping=True) == Hold("flapping",
                                                                             "flapping")
        assert f.decide(ALERT, 12, **alert("CRITICAL", flapping=True)).reason == "flapping"
        assert f.decide(HOST_FLAPPING, 13, flapping=True) is None  # the notice itself
        assert f.decision.held() == []


class PersistenceTests:
    def test_dirty_and_restore(self) -> None:
        """Held problems are handed to the store and restored after a restart."""
        f = Fixture()
        f.window(100, 200, "web1")
        f.decide(HOST_DOWN, 150)
        kept, gone = f.decision.take_dirty()
        assert (kept, gone) == ([HeldProblem("web1", "host.down", "DOWN", "maintenance",
                                             "maintenance 'patch' (kernel)", 150)], [])
        again = Fixture()
        again.decision.restore(kept)
        again.problems["web1", "host.down"] = "DOWN"
        assert [h.key for h in again.released(200)] == ["host.down"]
        again.decision.forget_host("web1")
        assert again.decision.take_dirty() == ([], [("web1", "host.down")])


class JobTests:
    def test_a_job_on_a_host_is_held_by_its_windows_and_silences_of_job_name(self) -> None:
        """A job's notices are held by its host's maintenance and by a silence of
        ``job:<name>``; a job without a host by neither (no host's window covers it)."""
        f = Fixture()
        f.window(100, 200, "db*")
        f.silence(300, 400, "db1", "job:backup")
        job = {"job": "backup", "level": "CRITICAL", "notify": True}
        assert f.decide(JOB, 150, "db1", **job) == MAINTENANCE
        assert f.decide(JOB, 150, "", **job) is None
        assert f.decide(JOB, 250, "db1", **job) is None
        assert f.decide(JOB, 350, "db1", **job) == SILENCE
        assert f.decide(JOB, 350, "db1", **{**job, "job": "certs"}) is None

    def test_a_held_job_problem_is_released_once_as_a_hosts_is(self) -> None:
        """A job falling late inside its host's window is remembered under ``job:<name>``
        (de-escalating keeps its level); at the window's end, still not OK, it is released
        once; one that recovered inside the window is not, nor is its recovery notified."""
        f = Fixture()
        f.window(100, 200, "db1")
        late = {"job": "backup", "level": "CRITICAL", "notify": True}
        assert f.decide(JOB, 150, "db1", **late) == MAINTENANCE
        assert f.decide(JOB, 160, "db1", job="backup", level="WARNING", notify=False) is None
        f.problems["db1", "job:backup"] = "WARNING"
        assert f.released(200) == [HeldProblem("db1", "job:backup", "WARNING", "maintenance",
                                               "maintenance 'patch' (kernel)", 150)]
        assert f.released(201) == []
        f.window(300, 400, "db1")
        assert f.decide(JOB, 350, "db1", **{**late, "job": "certs"}) == MAINTENANCE
        assert f.decide(JOB, 360, "db1", job="certs", level="OK", notify=True) == Hold(
            "problem_not_notified", "the problem was held back and never notified")
        assert f.released(400) == [] and f.decision.held() == []
