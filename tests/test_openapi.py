"""The served OpenAPI document and the routes describe the same API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from heartbeat.server.web import openapi
from heartbeat.server.web.api import HeartbeatAPI
from tests.apistack import Stack, user

PUBLIC = {("GET", "/api/0"), ("GET", "/api/0/openapi.json"), ("POST", "/api/0/auth/login")}


def _routes() -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every Klein route of the API."""
    found = set()
    for rule in HeartbeatAPI.app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, path))
    return found


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method != "parameters"}


@pytest.fixture
def stack(tmp_path: Any) -> Iterator[Stack]:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True)})
    yield stack
    stack.close()


def test_document_matches_routes(stack: Stack) -> None:
    """Every route is documented and every documented operation is routed."""
    served = stack.call("GET", "/api/0/openapi.json")
    assert served.status == 200
    assert served.json["openapi"] == "3.1.0"
    assert _documented(served.json) == _routes()
    assert {("GET", "/api/0/hosts"), ("PUT", "/api/0/hosts/{name}/access"),
            ("DELETE", "/api/0/users/{user}")} <= _routes()  # the walk found the routes


def test_path_parameters_are_declared() -> None:
    """Each {param} in a path is declared as a required path parameter."""
    for path, item in openapi.document("0")["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), path


def test_security_matches_behaviour(stack: Stack) -> None:
    """Operations without security are reachable anonymously; all others answer 401."""
    document = openapi.document("0")
    for method, path in sorted(_documented(document)):
        operation = document["paths"][path][method.lower()]
        concrete = path.replace("{name}", "web1").replace("{plugin}", "cpu").replace(
            "{user}", "alice")
        body = {"username": "alice", "password": "alice-password"} \
            if path.endswith("login") else None
        response = stack.call(method, concrete, body)
        if (method, path) in PUBLIC:
            assert operation["security"] == [], path
            assert response.status != 401, (method, path, response)
        else:
            assert "security" not in operation, path
            assert response.status == 401, (method, path, response)
            assert "401" in operation["responses"], path


def test_every_error_response_is_the_error_shape() -> None:
    """Every 4xx/5xx response documents the {error, detail} body."""
    document = openapi.document("0")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)


def test_request_bodies_are_the_enforced_schemas() -> None:
    """The documented request bodies are the very schemas the server validates with."""
    from heartbeat.server.web import schema

    document = openapi.document("0")
    body = document["paths"]["/api/0/hosts/{name}/access"]["put"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == schema.ACCESS_BODY


def test_index_lists_every_operation(stack: Stack) -> None:
    """GET /api/0 lists the documented operations."""
    index = stack.call("GET", "/api/0").json
    assert sorted(index["endpoints"]) == sorted(f"{m} {p}" for m, p in _routes())
    assert (index["authentication"], index["openapi"]) == (True, "/api/0/openapi.json")
