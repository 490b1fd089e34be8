"""JSON answers and errors shared by the API and the request authenticator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed

from heartbeat.text import json_bytes

__all__ = ["ApiError", "json_headers", "json_response", "routing_error"]


class ApiError(Exception):
    """An error answered as ``{"error": code, "detail": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: str, detail: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    def respond(self, request: IRequest) -> bytes:
        for name, value in self.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("latin-1"))
        return json_response(request, {"error": self.code, "detail": self.detail}, self.status)


def json_headers(request: IRequest, status: int = 200) -> None:
    """The status and headers of every JSON answer (streamed ones write the body after)."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")


def json_response(request: IRequest, body: Any, status: int = 200) -> bytes:
    json_headers(request, status)
    return json_bytes(body)


def routing_error(request: IRequest, failure: Failure) -> bytes:
    """Klein's NotFound and MethodNotAllowed as JSON errors (405 with Allow)."""
    error = failure.value
    if isinstance(error, MethodNotAllowed):
        allowed = sorted(set(error.valid_methods or []) - {"HEAD", "OPTIONS"})
        method = request.method.decode("latin-1")
        return ApiError(405, "method_not_allowed",
                        f"{method} is not allowed here; use {', '.join(allowed)}",
                        {"Allow": ", ".join(allowed)}).respond(request)
    path = request.path.decode("latin-1")
    return ApiError(404, "not_found", f"no endpoint {path}").respond(request)
