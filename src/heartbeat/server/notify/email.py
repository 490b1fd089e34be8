"""E-mail through twisted.mail's ESMTP client: STARTTLS, implicit TLS or plain, optional AUTH.

``tls: starttls`` refuses to send in cleartext (``requireTransportSecurity``), and the
server's certificate is checked against ``ca_file`` (else the platform's trust store)
for ``smtp_host``. The client's own retries are off: the notifier retries with backoff.
"""

from __future__ import annotations

import re
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default
from email.utils import formatdate, make_msgid
from io import BytesIO
from pathlib import Path
from typing import Any

from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred
from twisted.mail.smtp import ESMTPSenderFactory, SMTPClientError, SMTPConnectError
from twisted.python.failure import Failure

from heartbeat.config.server import EmailConfig
from heartbeat.server.notify.base import DeliveryError, Notification

__all__ = ["EmailChannel", "client_tls_options"]

SUBJECT_PREFIX = "[heartbeat] "
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class _Headers(HeaderRegistry):
    """The standard library's header registry, each header class made once.

    ``HeaderRegistry`` makes a new class for every header it parses: a third of the
    time rendering a message took (1.5 ms instead of 2.3 ms now; issue 12's whole-server
    fuzzer renders thousands). The classes hold no state: one per header name does the
    same, byte for byte.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        made = self._made.get(name.lower())
        if made is None:
            made = self._made[name.lower()] = super().__getitem__(name)
        return made


_POLICY = default.clone(header_factory=_Headers())


def client_tls_options(hostname: str, ca_file: str | None) -> Any:
    """TLS client options that verify ``hostname``, trusting ``ca_file`` if given."""
    if ca_file is None:
        return ssl.optionsForClientTLS(hostname)
    certificates = [ssl.Certificate.loadPEM(block)
                    for block in _PEM.findall(Path(ca_file).read_bytes())]
    if not certificates:
        raise ValueError(f"{ca_file}: no PEM certificate in it")
    return ssl.optionsForClientTLS(hostname, trustRoot=ssl.trustRootFromCertificates(certificates))


def _reason(failure: Failure) -> Failure:
    """A DeliveryError naming the SMTP reply, never the transcript (it holds AUTH data)."""
    if failure.check(CancelledError, DeliveryError):
        return failure
    error = failure.value
    if isinstance(error, SMTPClientError):
        resp = error.resp.decode("utf-8", "replace") if isinstance(error.resp, bytes) \
            else str(error.resp)
        permanent = not isinstance(error, SMTPConnectError) and (error.code or 0) >= 500
        code = f"{error.code} " if error.code and error.code > 0 else ""
        raise DeliveryError(f"SMTP {code}{resp}".strip(), permanent)
    raise DeliveryError(f"{type(error).__name__}: {error}")


class _SenderFactory(ESMTPSenderFactory):
    """``ESMTPSenderFactory`` whose clients time out on the channel's reactor.

    Twisted's ``TimeoutMixin`` asks the global reactor. Under twistd that is the same
    one; anywhere else (a memory reactor) the client's timeouts would never fire, and a
    reactor that never runs keeps every cancelled one.
    """

    def __init__(self, clock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.callLater = self.clock.callLater
        return protocol


class EmailChannel:
    """One SMTP transaction per notification, all recipients in it."""

    name = "email"
    max_recipients = 50

    def __init__(self, reactor: Any, config: EmailConfig, timeout: float,
                 tls_options: Any = None) -> None:
        self._reactor = reactor
        self._config = config
        self._timeout = timeout
        if config.tls != "none" and tls_options is None:
            tls_options = client_tls_options(config.smtp_host, config.ca_file)
        self._tls_options = tls_options
        self.secrets: tuple[str, ...] = tuple(s for s in (config.password,) if s)
        self._msgid_domain = config.from_addr.rpartition("@")[2] or "heartbeat"

    def render(self, note: Notification) -> bytes:
        message = EmailMessage(policy=_POLICY)
        message["Subject"] = SUBJECT_PREFIX + note.title
        message["From"] = self._config.from_addr
        message["To"] = ", ".join(note.recipients)
        message["Date"] = formatdate(note.ts, localtime=True)
        message["Message-ID"] = make_msgid("heartbeat", domain=self._msgid_domain)
        message["X-Heartbeat-Level"] = note.level
        message["X-Heartbeat-Hosts"] = " ".join(note.hosts)
        message.set_content(note.body + "\n")
        return message.as_bytes()

    def send(self, notification: Notification) -> Deferred[None]:
        config = self._config
        connector: Any = None

        def cancel(_: Deferred[None]) -> None:
            factory.sendFinished = True
            if factory.currentProtocol is not None:
                factory.currentProtocol.transport.abortConnection()
            elif connector is not None:
                connector.disconnect()

        done: Deferred[None] = Deferred(cancel)
        username = config.username.encode() if config.username else None
        password = config.password.encode() if config.password else None
        factory = _SenderFactory(
            self._reactor, username, password, config.from_addr, list(notification.recipients),
            BytesIO(self.render(notification)), done, retries=0, timeout=self._timeout,
            contextFactory=self._tls_options if config.tls == "starttls" else None,
            heloFallback=config.tls == "none" and username is None,
            requireAuthentication=username is not None,
            requireTransportSecurity=config.tls != "none")
        if config.tls == "tls":
            connector = self._reactor.connectSSL(config.smtp_host, config.smtp_port, factory,
                                                 self._tls_options, timeout=self._timeout)
        else:
            connector = self._reactor.connectTCP(config.smtp_host, config.smtp_port, factory,
                                                 timeout=self._timeout)
        return done.addCallback(lambda _: None).addErrback(_reason)
