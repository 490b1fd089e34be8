"""Notification routing asks the same users and access lists the API changes (real twistd).

A host's owner deleted through the API stops getting its mail at once, and the
user the API made its owner starts: no restart, no config edit.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from heartbeat.passwords import hash_password
from tests.peers import SmtpSink, within

PASSWORD = "alice-password"


@pytest_twisted.ensureDeferred
async def test_an_owner_changed_through_the_api_gets_the_mail(server_factory: Any) -> None:
    sink = SmtpSink().start()
    try:
        server = server_factory(
            email={"smtp_host": "127.0.0.1", "smtp_port": sink.port, "tls": "none",
                   "from_addr": "hb@example.com"},
            users={"alice": {"admin": True, "password": hash_password(PASSWORD),
                             "email": "alice@example.com", "notification_channels": ["email"]},
                   "bob": {"email": "bob@example.com", "notification_channels": ["email"]}},
            hosts={"web1": {"owner": "bob"}}, notify_timeout=5.0)
        code, body = server.request("POST", "/api/0/auth/login",
                                    {"username": "alice", "password": PASSWORD})
        assert code == 200, body
        auth = {"Authorization": f"Bearer {body['token']}"}
        server.send({"ID": "HTB", "name": "web1"})
        for method, path, change in [
                ("DELETE", "/api/0/users/bob", None),
                ("POST", "/api/0/users", {"name": "carol", "email": "carol@example.com",
                                          "notification_channels": ["email"]}),
                ("PUT", "/api/0/hosts/web1/access", {"owner": "carol", "managers": [],
                                                     "monitors": []})]:
            code, body = server.request(method, path, change, auth)
            assert code in (200, 201), body
        server.send({"ID": "SHUT", "name": "web1"})
        mails = [await within(sink.mails.get(), 10) for _ in range(2)]  # one per recipient
    finally:
        await sink.stop()
    assert {mail.message["Subject"] for mail in mails} == {"[heartbeat] SHUT: web1"}
    assert sorted(r for mail in mails for r in mail.recipients) == [
        "alice@example.com", "carol@example.com"]
