"""Silences and acknowledgements, with plain times."""

from __future__ import annotations

from typing import Any

import pytest

from heartbeat.config.loader import ConfigError
from heartbeat.server.acks import HOST, AckBook, Acknowledgement
from heartbeat.server.silences import Silence, SilenceBook, parse_silence

NOW = 1_800_000_000.0


def silence(raw: dict[str, Any], silence_id: str = "1", author: str | None = "bob") -> Silence:
    return parse_silence(raw, source="body", default_zone="UTC", now=NOW,
                         silence_id=silence_id, author=author)


class SilenceTests:
    def test_defaults_and_shape(self) -> None:
        """metric defaults to *, start to now; the API shape says its state."""
        s = silence({"host": "web*", "duration": "2h", "comment": " disk swap "})
        assert s.to_json(NOW) == {
            "id": "1", "host": "web*", "metric": "*", "start": NOW, "end": NOW + 7200,
            "author": "bob", "comment": "disk swap", "created": NOW, "ended_by": None,
            "state": "active"}
        assert [s.state(t) for t in (NOW - 1, NOW, NOW + 7200)] == [
            "pending", "active", "expired"]

    def test_matching_by_host_and_subject(self) -> None:
        """Host glob and subject glob: a metric path, or a host notice's kind."""
        s = silence({"host": "web*", "metric": "disk_monitor.*", "duration": 60,
                     "comment": "x"})
        assert [s.matches(h, m) for h, m in (
            ("web1", "disk_monitor.partitions./.percent"), ("web1", "cpu_monitor.cpu_percent"),
            ("db1", "disk_monitor.partitions./.percent"), ("web1", "host.down"))] == [
            True, False, False, False]
        everything = silence({"host": "db1", "duration": 60, "comment": "x"})
        assert everything.matches("db1", "host.down") and everything.matches("db1", "rtt.db1")
        own = silence({"host": "db1", "metric": "host.*", "duration": 60, "comment": "x"})
        assert own.matches("db1", "host.up") and not own.matches("db1", "rtt.db1")

    @pytest.mark.parametrize(("raw", "line"), [
        ({"metric": "*", "duration": 60, "comment": "x"},
         "body: host: is required: a host name or glob"),
        ({"host": "a", "duration": 60}, "body: comment: is required: say why (at most 1000 "
                                         "characters)"),
        ({"host": "a", "duration": 60, "comment": "  "},
         "body: comment: is required: say why (at most 1000 characters)"),
        ({"host": "a", "comment": "x"},
         "body: end: a silence needs an end or a duration (e.g. 2h)"),
        ({"host": "a", "comment": "x", "end": NOW + 5, "duration": 5},
         "body: duration: give end or duration, not both"),
        ({"host": "a", "comment": "x", "end": NOW - 5, "start": NOW - 10},
         "body: end: the silence would already be over"),
        ({"host": "a", "comment": "x", "start": NOW + 10, "end": NOW + 5},
         "body: end: the silence must end after it starts"),
        ({"host": "a", "comment": "x", "duration": "soon"},
         "body: duration: not a duration: 'soon' (seconds, or e.g. 2h, 1h30m, 1d)"),
        ({"host": "a\nb", "comment": "x", "duration": 5},
         "body: host: expected a glob of 1-500 printable characters, got 'a\\nb'"),
        ({"host": "a", "comment": "x", "duration": 5, "who": "me"},
         "body: who: unknown field; a silence has host, metric, start, end, duration, "
         "comment, timezone"),
    ])
    def test_errors_name_the_field(self, raw: dict[str, Any], line: str) -> None:
        """Each mistake is one line naming the field."""
        with pytest.raises(ConfigError) as caught:
            silence(raw)
        assert str(caught.value) == line

    def test_book(self) -> None:
        """matching, expire early (kept, with who ended it), next_change, purge, ids."""
        book = SilenceBook()
        first = silence({"host": "web1", "duration": 100, "comment": "a"}, book.next_id())
        later = silence({"host": "web*", "start": NOW + 50, "duration": 200, "comment": "b"},
                        book.next_id())
        book.put(first)
        book.put(later)
        assert [s.id for s in book] == ["1", "2"]
        assert book.matching("web1", "host.down", NOW + 10) == first
        assert book.matching("web1", "host.down", NOW + 60) == later  # the longer lasting
        assert book.matching("db1", "host.down", NOW + 60) is None
        assert [book.next_change(t) for t in (NOW, NOW + 50, NOW + 100, NOW + 250)] == [
            NOW + 50, NOW + 100, NOW + 250, None]
        ended = book.expire("2", NOW + 60, "carol")
        assert ended is not None and (ended.end, ended.ended_by, ended.state(NOW + 60)) == (
            NOW + 60, "carol", "expired")
        assert book.expire("9", NOW, "carol") is None
        assert [s.id for s in book.active(NOW + 61)] == ["1"]
        assert book.purge(NOW + 70) == ["2"]
        assert book.next_id() == "3"

    def test_expiring_a_pending_silence(self) -> None:
        """Ending a silence that has not begun makes it begin and end now: never active."""
        book = SilenceBook()
        book.put(silence({"host": "a", "start": NOW + 100, "duration": 60, "comment": "x"}))
        ended = book.expire("1", NOW, None)
        assert ended is not None and (ended.start, ended.end) == (NOW, NOW)
        assert book.matching("a", "host.down", NOW + 120) is None


    def test_lookups_follow_every_change(self) -> None:
        """The book's index by host follows puts, early ends, purges and a replacing
        restore: what matches is always what the silences say."""
        book = SilenceBook()
        book.put(silence({"host": "db1", "duration": 60, "comment": "x"}))
        book.put(silence({"host": "db*", "metric": "disk.*", "duration": 600, "comment": "y"},
                         "2"))
        assert book.matching("db1", "cpu", NOW) == book.get("1")
        assert book.matching("db1", "disk.free", NOW) == book.get("2")  # the longer one
        book.expire("1", NOW + 1, "bob")
        assert book.matching("db1", "cpu", NOW + 2) is None
        book.put(silence({"host": "db1", "duration": 60, "comment": "again"}, "3"))
        assert book.matching("db1", "cpu", NOW + 2) == book.get("3")
        assert book.purge(NOW + 2) == ["1"]
        book.restore([silence({"host": "web1", "duration": 60, "comment": "z"}, "9")],
                     replace=True)
        assert (book.matching("db1", "disk.free", NOW), book.matching("web1", "x", NOW)) == (
            None, book.get("9"))


class AckTests:
    def test_holds_at_its_level_until_the_level_changes(self) -> None:
        """An acknowledgement covers its level; a change of level ends it."""
        acks = AckBook()
        ack = Acknowledgement("web1", "cpu_monitor.cpu_percent", "CRITICAL", "bob", "on it", NOW)
        acks.put(ack)
        acks.put(Acknowledgement("web1", HOST, "DOWN", "bob", "rebooting", NOW))
        assert acks.holding("web1", "cpu_monitor.cpu_percent", "CRITICAL") == ack
        assert acks.holding("web1", "cpu_monitor.cpu_percent", "WARNING") is None
        assert acks.level_changed("web1", "cpu_monitor.cpu_percent", "CRITICAL") is None
        assert acks.level_changed("web1", "cpu_monitor.cpu_percent", "WARNING") == ack
        assert acks.get("web1", "cpu_monitor.cpu_percent") is None
        assert sorted(acks.for_host("web1")) == [HOST]
        assert ack.to_json() == {"by": "bob", "at": NOW, "comment": "on it",
                                 "level": "CRITICAL"}

    def test_remove_and_forget(self) -> None:
        """remove un-acknowledges one target; forget drops a removed host's."""
        acks = AckBook()
        acks.put(Acknowledgement("a", "x", "WARNING", None, "", NOW))
        acks.put(Acknowledgement("a", "y", "WARNING", None, "", NOW))
        assert acks.remove("a", "x") is not None and acks.remove("a", "x") is None
        assert len(acks) == 1
        assert [a.target for a in acks.forget("a")] == ["y"]
        assert len(acks) == 0 and acks.remove("a", "y") is None
