"""Real peers for notification tests, on loopback: an ESMTP server and HTTP endpoints.

Twisted's own ESMTP server stands in for a mail relay (plain, STARTTLS, implicit TLS,
optional AUTH); a Twisted web resource stands in for Pushover, Mattermost and the
signal-cli REST API, recording each request and answering as the test scripts it.
Both wait, on stop, for their connections to close, so no test leaves timers behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, ssl, task
from twisted.internet.interfaces import ISSLTransport
from twisted.mail import imap4, smtp
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from tests.certs import write_self_signed

__all__ = [
    "HttpEndpoint",
    "Recorded",
    "SelfSignedCert",
    "SmtpSink",
    "make_certificate",
    "within",
]


def within(d: defer.Deferred[Any], seconds: float = 5.0) -> defer.Deferred[Any]:
    """``d`` failing with TimeoutError after ``seconds`` (so a broken test fails, not hangs)."""
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


@dataclass
class SelfSignedCert:
    """A self-signed certificate for localhost / 127.0.0.1 (tests/certs.py) and its key."""

    ca_file: Path
    key_file: Path

    def server_options(self) -> Any:
        pem = self.key_file.read_bytes() + self.ca_file.read_bytes()
        return ssl.PrivateCertificate.loadPEM(pem).options()


def make_certificate(directory: Path) -> SelfSignedCert:
    """A fresh test certificate under ``directory``; its own PEM is the client's CA file."""
    cert, key = write_self_signed(directory, "test-ca.pem", "test-key.pem")
    return SelfSignedCert(cert, key)


async def _closed(factory: WrappingFactory, grace: float) -> None:
    """Wait up to ``grace`` s for the clients to hang up, then cut the rest off."""
    from twisted.internet import reactor

    for step in range(int(grace / 0.01) + 100):
        if not factory.protocols:
            break
        if step * 0.01 >= grace:
            for protocol in list(factory.protocols):
                protocol.transport.abortConnection()
        await task.deferLater(reactor, 0.01)
    await task.deferLater(reactor, 0)  # let the client side see its close too


# --- SMTP

@dataclass
class Mail:
    """One message as the server received it."""

    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    authenticated: bool

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, sink: SmtpSink, user: smtp.User) -> None:
        self.sink = sink
        self.user = user
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[None]:
        protocol = self.user.protocol
        tls = bool(protocol.startedTLS) or ISSLTransport.providedBy(protocol.transport)
        self.sink.deliver(self.user, b"\n".join(self.lines) + b"\n", tls,
                          bool(getattr(protocol, "authenticated", None)))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: from test client by smtp.test"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], _Message]:
        return lambda: _Message(self.sink, user)


@implementer(IRealm)
class _Realm:
    def __init__(self, delivery: _Delivery) -> None:
        self.delivery = delivery

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, self.delivery, lambda: None


class _Factory(smtp.SMTPFactory):
    protocol = smtp.ESMTP
    domain = b"smtp.test"

    def __init__(self, sink: SmtpSink, portal: Portal | None) -> None:
        super().__init__(portal)
        self.sink = sink

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        p.timeout = None
        p.ctx = self.sink.starttls
        p.challengers = {b"LOGIN": smtp.LOGINCredentials, b"PLAIN": imap4.PLAINCredentials}
        if self.portal is None:
            p.delivery = self.sink.delivery
        return p


@dataclass
class SmtpSink:
    """An ESMTP server on 127.0.0.1; ``mails`` yields each message received."""

    starttls: Any = None
    """Server TLS options offered through STARTTLS (None: STARTTLS fails)."""
    implicit_tls: Any = None
    """Server TLS options for TLS from the first byte (port 465 style)."""
    users: dict[bytes, bytes] | None = None
    """Logins required (AUTH); None: no AUTH."""
    mails: defer.DeferredQueue[Mail] = field(default_factory=defer.DeferredQueue)
    port: int = 0

    def __post_init__(self) -> None:
        self.delivery = _Delivery(self)
        portal = None
        if self.users is not None:
            portal = Portal(_Realm(self.delivery),
                            [InMemoryUsernamePasswordDatabaseDontUse(**{
                                k.decode(): v for k, v in self.users.items()})])
        self._wrapper = WrappingFactory(_Factory(self, portal))
        self._listening: Any = None

    def deliver(self, user: smtp.User, data: bytes, tls: bool, authenticated: bool) -> None:
        self.mails.put(Mail(str(user.orig), [str(user.dest)], data, tls, authenticated))

    def start(self) -> SmtpSink:
        from twisted.internet import reactor

        if self.implicit_tls is not None:
            self._listening = reactor.listenSSL(0, self._wrapper, self.implicit_tls,
                                                interface="127.0.0.1")
        else:
            self._listening = reactor.listenTCP(0, self._wrapper, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self

    async def stop(self) -> None:
        await self._listening.stopListening()
        await _closed(self._wrapper, grace=2.0)  # the client's QUIT ends it


# --- HTTP

@dataclass
class Recorded:
    """One request as the endpoint received it."""

    method: str
    path: str
    content_type: str
    body: bytes


class _Endpoint(Resource):
    isLeaf = True

    def __init__(self, owner: HttpEndpoint) -> None:
        super().__init__()
        self.owner = owner

    def render(self, request: Any) -> Any:
        owner = self.owner
        owner.requests.put(Recorded(
            request.method.decode(), request.path.decode(),
            (request.getHeader(b"content-type") or b"").decode(), request.content.read()))
        code, body = owner.answers.pop(0) if owner.answers else (200, b"ok")
        if code <= 0:  # hang: 0 never answers, -N sends status N and a partial body
            owner.hanging.append(request)
            request.notifyFinish().addErrback(lambda _: owner.aborted.append(request.path))
            if code < 0:
                request.setResponseCode(-code)
                request.write(body)
            return NOT_DONE_YET
        request.setResponseCode(code)
        return body


@dataclass
class HttpEndpoint:
    """An HTTP server on 127.0.0.1 that records requests and gives scripted answers.

    ``answers`` is consumed one per request: (status, body); (0, b"") hangs before the
    status line, (-status, part) sends the status and part of a body, then hangs.
    After it runs out every request gets 200 ``ok``. ``aborted`` lists the paths of
    hung requests whose connection the client closed.
    """

    answers: list[tuple[int, bytes]] = field(default_factory=list)
    requests: defer.DeferredQueue[Recorded] = field(default_factory=defer.DeferredQueue)
    hanging: list[Any] = field(default_factory=list)
    aborted: list[bytes] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._wrapper = WrappingFactory(Site(_Endpoint(self), timeout=None))
        self._listening: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpEndpoint:
        from twisted.internet import reactor

        self._listening = reactor.listenTCP(0, self._wrapper, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self

    async def stop(self) -> None:
        await self._listening.stopListening()
        await _closed(self._wrapper, grace=0.0)  # keep-alive connections: cut at once
