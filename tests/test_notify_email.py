"""E-mail channel against Twisted's own ESMTP server on loopback: plain, STARTTLS, TLS, AUTH."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.python.failure import Failure

from heartbeat.config.server import EmailConfig
from heartbeat.server.notify.base import DeliveryError, Notification
from heartbeat.server.notify.email import EmailChannel
from tests.peers import SmtpSink, make_certificate, within

NOTE = Notification("DOWN: web1", "web1 is DOWN: no heartbeat since 12:00:00 (1m 12s).",
                    "critical", ("web1",), "host.down", 1711234567.0,
                    ("ops@example.com", "alice@example.com"))


def channel(sink: SmtpSink, **settings: object) -> EmailChannel:
    from twisted.internet import reactor

    config = EmailConfig(**{"smtp_host": "127.0.0.1", "smtp_port": sink.port,
                            "from_addr": "heartbeat@example.com", **settings})
    return EmailChannel(reactor, config, timeout=5.0)


async def send_and_collect(sink: SmtpSink, mailer: EmailChannel) -> list:
    try:
        await within(mailer.send(NOTE))
        return [await within(sink.mails.get()) for _ in NOTE.recipients]
    finally:
        await sink.stop()


@pytest_twisted.ensureDeferred
async def test_plain_smtp_delivers_subject_body_and_recipients() -> None:
    """tls: none sends one message to every recipient with the title as subject."""
    sink = SmtpSink().start()
    mails = await send_and_collect(sink, channel(sink, tls="none"))
    assert [(m.sender, m.recipients, m.tls, m.authenticated) for m in mails] == [
        ("heartbeat@example.com", ["ops@example.com"], False, False),
        ("heartbeat@example.com", ["alice@example.com"], False, False)]
    message = mails[0].message
    assert (message["Subject"], message["From"], message["To"], message["X-Heartbeat-Level"],
            message.get_content()) == (
        "[heartbeat] DOWN: web1", "heartbeat@example.com", "ops@example.com, alice@example.com",
        "critical", "web1 is DOWN: no heartbeat since 12:00:00 (1m 12s).\n")


@pytest_twisted.ensureDeferred
async def test_starttls_with_login_and_test_ca(tmp_path: Path) -> None:
    """tls: starttls upgrades the connection, checks the cert against ca_file, then logs in."""
    cert = make_certificate(tmp_path)
    sink = SmtpSink(starttls=cert.server_options(), users={b"hb": b"s3cret"}).start()
    mails = await send_and_collect(sink, channel(sink, tls="starttls", username="hb",
                                                 password="s3cret", ca_file=str(cert.ca_file)))
    assert [(m.recipients, m.tls, m.authenticated) for m in mails] == [
        (["ops@example.com"], True, True), (["alice@example.com"], True, True)]
    assert mails[1].message["Subject"] == "[heartbeat] DOWN: web1"


@pytest_twisted.ensureDeferred
async def test_implicit_tls(tmp_path: Path) -> None:
    """tls: tls speaks TLS from the first byte (port 465 style)."""
    cert = make_certificate(tmp_path)
    sink = SmtpSink(implicit_tls=cert.server_options()).start()
    mails = await send_and_collect(sink, channel(sink, tls="tls", ca_file=str(cert.ca_file)))
    assert [(m.recipients, m.tls) for m in mails] == [
        (["ops@example.com"], True), (["alice@example.com"], True)]


async def send_fails(sink: SmtpSink, mailer: EmailChannel) -> DeliveryError:
    try:
        with pytest.raises(DeliveryError) as caught:
            await within(mailer.send(NOTE))
        assert sink.mails.pending == []
    finally:
        await sink.stop()
    return caught.value


@pytest_twisted.ensureDeferred
async def test_starttls_required_but_not_offered_fails_without_sending() -> None:
    """A server without STARTTLS gets nothing in cleartext when tls is starttls."""
    sink = SmtpSink().start()
    error = await send_fails(sink, channel(sink, tls="starttls"))
    assert (error.reason, error.permanent) == (
        "SMTP 502 Server does not support secure communication via TLS / SSL", True)


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate_fails(tmp_path: Path) -> None:
    """A certificate not signed by ca_file (here: the platform store) is refused."""
    cert = make_certificate(tmp_path)
    other = make_certificate(tmp_path / "other")
    sink = SmtpSink(starttls=cert.server_options()).start()
    error = await send_fails(sink, channel(sink, tls="starttls", ca_file=str(other.ca_file)))
    assert "certificate verify failed" in error.reason
    assert error.permanent is False


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_permanent_and_not_in_the_reason(tmp_path: Path) -> None:
    """A refused login is a permanent failure whose reason never shows the password."""
    cert = make_certificate(tmp_path)
    sink = SmtpSink(starttls=cert.server_options(), users={b"hb": b"s3cret"}).start()
    error = await send_fails(sink, channel(sink, tls="starttls", username="hb",
                                           password="wrong-pass", ca_file=str(cert.ca_file)))
    assert error.permanent is True
    assert error.reason.startswith("SMTP 535")
    assert "wrong-pass" not in error.reason


def test_a_message_is_rendered_as_the_standard_library_renders_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The header classes made once (``_Headers``) change nothing: the bytes are those of
    the standard library's own policy, for plain and for non-ASCII, folded headers."""
    from email import policy

    from heartbeat.server.notify import email as module

    monkeypatch.setattr(module, "make_msgid", lambda *_, **__: "<fixed@example.com>")
    mailer = EmailChannel(None, EmailConfig(smtp_host="127.0.0.1", tls="none",
                                            from_addr="heartbeat@example.com"), timeout=5.0)
    odd = Notification("WARNING: zoë-db " + "naïve 😀 " * 20, "ünïcode\n" * 40 + "x" * 2000,
                       "warning", ("zoë-db", "b"), "threshold", 1711234567.0,
                       ("Zoë <zoe@example.com>", "ops@example.com"))
    notes = [NOTE, odd]
    cached = [mailer.render(note) for note in notes * 2]
    monkeypatch.setattr(module, "_POLICY", policy.default)
    assert cached == [mailer.render(note) for note in notes * 2]


def test_a_silent_server_times_out_on_the_channels_reactor() -> None:
    """The SMTP client's own timeout runs on the reactor the channel was given (twisted's
    TimeoutMixin would ask the global one): a server that greets and then says nothing
    fails the send once the timeout has passed on that clock."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    clock = MemoryReactorClock()
    mailer = EmailChannel(clock, EmailConfig(smtp_host="127.0.0.1", tls="none",
                                             from_addr="heartbeat@example.com"), timeout=5.0)
    outcome: list[object] = []
    mailer.send(NOTE).addBoth(outcome.append)
    _, _, factory, _, _ = clock.tcpClients[0]
    client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 25))
    client.makeConnection(StringTransport())
    client.dataReceived(b"220 silent ESMTP\r\n")
    clock.advance(4.0)
    assert outcome == []
    clock.advance(2.0)
    assert len(outcome) == 1 and isinstance(outcome[0], Failure)
    assert outcome[0].check(DeliveryError)
