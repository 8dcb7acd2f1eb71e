"""X-Request-ID: accept a well-formed incoming id, else generate one; echo it; bind it to logs."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from flask import Flask, Response, g, request

from echo_identity.logs import get_logger

HEADER = "X-Request-ID"
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
log = get_logger("echo_identity.http")


def accepted_request_id(incoming: str | None) -> str:
    """``incoming`` when it is 8-128 safe characters, otherwise a fresh random id."""
    if incoming and _WELL_FORMED.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def current_request_id() -> str:
    request_id: str = g.get("request_id", "")
    return request_id


def _begin() -> None:
    g.request_id = accepted_request_id(request.headers.get(HEADER))
    g.request_started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=g.request_id)


def _finish(response: Response) -> Response:
    response.headers[HEADER] = g.request_id
    if not request.path.startswith("/static/"):
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - g.request_started) * 1000, 1),
            remote_addr=request.remote_addr,
        )
    return response


def _unbind(_exc: BaseException | None) -> None:
    structlog.contextvars.clear_contextvars()


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_unbind)
