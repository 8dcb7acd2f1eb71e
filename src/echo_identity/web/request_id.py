"""X-Request-ID: accept a well-formed incoming id, else generate one; echo it; bind it to logs.

Every answered request also gets one access line at INFO (``echo_identity.http``: method, path,
status, duration, client address), which operators rely on; below INFO it is not built at all.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

import structlog
from flask import Flask, Response, g, request

from echo_identity.logs import get_logger

HEADER = "X-Request-ID"
_ENVIRON_KEY = "HTTP_X_REQUEST_ID"
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
log = get_logger("echo_identity.http")
# The stdlib logger under ``log``: asked for its level before the line's fields are gathered.
_access = logging.getLogger("echo_identity.http")


def accepted_request_id(incoming: str | None) -> str:
    """``incoming`` when it is 8-128 safe characters, otherwise a fresh random id (32 hex)."""
    if incoming and _WELL_FORMED.fullmatch(incoming):
        return incoming
    return secrets.token_hex(16)


def current_request_id() -> str:
    request_id: str = g.get("request_id", "")
    return request_id


def _begin() -> None:
    request_id = accepted_request_id(request.environ.get(_ENVIRON_KEY))
    g.request_id = request_id
    g.request_started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)


def _finish(response: Response) -> Response:
    response.headers[HEADER] = g.request_id
    if _access.isEnabledFor(logging.INFO):
        path = request.path
        if not path.startswith("/static/"):
            log.info(
                "request",
                method=request.method,
                path=path,
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
