"""Error rendering: a stable ``error`` code, the right status, never a stack trace.

API routes (``/api/``, health checks, and blueprints registered with :func:`json_blueprint`)
and clients that prefer JSON get ``{"error": code, "error_description": ..., "request_id": ...}``;
browsers get a small HTML page with the same information.

A store that does not answer (the database, Redis) fails the request closed with 503
``service_unavailable`` (:class:`StoreUnavailableError`), wherever it is noticed: in a view, or
while the session is opened or saved around it.
"""

from __future__ import annotations

import redis
from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from echo_identity.errors import EchoError
from echo_identity.logs import get_logger
from echo_identity.web.request_id import current_request_id

log = get_logger("echo_identity.errors")
_JSON_PREFIXES = ("/api/", "/healthz", "/readyz")
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
# Errors meaning "the store did not answer", not "the request or our code is wrong".
STORE_OUTAGES: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    sa_exc.OperationalError,
    sa_exc.TimeoutError,  # connection pool exhausted
)


class StoreUnavailableError(EchoError):
    """A store this instance depends on (database, Redis) is unreachable; retry later."""

    code = "service_unavailable"
    status = 503
    description = "The service is temporarily unavailable. Try again in a moment."


class MalformedRequestError(EchoError):
    """RFC 6749 §5.2, RFC 6750 §3.1 ``invalid_request``: the request is malformed (the input
    screen, ``web.hygiene``, names the part at fault in the description)."""

    code = "invalid_request"
    status = 400
    description = "The request is malformed."


class MalformedClientCredentialsError(EchoError):
    """RFC 6749 §5.2 ``invalid_client``: HTTP Basic client credentials that do not decode to
    text; answered 401 with a ``Basic`` challenge, as every client-authenticating endpoint
    answers malformed credentials."""

    code = "invalid_client"
    status = 401
    description = "The Basic credentials are malformed."

    def headers(self) -> dict[str, str]:
        return {
            "WWW-Authenticate": f'Basic error="{self.code}", error_description="{self.description}"'
        }


def json_blueprint(app: Flask, blueprint: Blueprint) -> None:
    """Render errors raised under ``blueprint`` as JSON (for protocol endpoints)."""
    app.extensions.setdefault("echo.json_blueprints", set()).add(blueprint.name)


def wants_json() -> bool:
    if request.path.startswith(_JSON_PREFIXES):
        return True
    if request.blueprint in current_app.extensions.get("echo.json_blueprints", set()):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(code: str, status: int, description: str) -> Response:
    if wants_json():
        response = jsonify(
            error=code, error_description=description, request_id=current_request_id()
        )
    else:
        response = current_app.response_class(
            render_template(
                "error.html",
                code=code,
                status=status,
                description=description,
                request_id=current_request_id(),
            ),
            mimetype="text/html",
        )
    response.status_code = status
    return response


def echo_error_response(exc: EchoError) -> Response:
    """The error's code, status and description, with the headers it builds itself
    (:meth:`EchoError.headers`: a bearer refusal's ``WWW-Authenticate``)."""
    response = error_response(exc.code, exc.status, exc.description)
    response.headers.update(exc.headers())
    return response


def _csrf_error(_exc: CSRFError) -> Response:
    return error_response(
        "csrf_failed",
        400,
        "The form expired or did not come from this site. Go back, reload the page and retry.",
    )


def _store_outage(exc: Exception) -> Response:
    # A warning without the trace: one per request while the store is down, and the trace says
    # nothing the store's own monitoring does not.
    log.warning("store_unavailable", error_type=type(exc).__name__)
    return echo_error_response(StoreUnavailableError())


def _http_error(exc: HTTPException) -> Response:
    # Flask turns errors raised outside the view (opening or saving the session, after-request
    # hooks such as the rate-limit headers) into a 500 carrying the original exception.
    original = getattr(exc, "original_exception", None)
    if isinstance(original, STORE_OUTAGES):
        return _store_outage(original)
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "server_error" if status >= 500 else "invalid_request")
    response = error_response(code, status, exc.description or "")
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return error_response(
        "server_error",
        500,
        "Something went wrong on our side. Quote the request id if you report it.",
    )


def _protocol_error(exc: OAuth2Error) -> Response:
    """An Authlib protocol error that escaped the endpoint's own handling (e.g. a plain-http
    ``Host`` in development: ``insecure_transport``): its wire code and status, no trace."""
    status = int(exc.status_code or 400)
    return error_response(
        str(exc.error or "invalid_request"), status, str(exc.description or "Invalid request.")
    )


def init_app(app: Flask) -> None:
    app.register_error_handler(EchoError, echo_error_response)
    app.register_error_handler(OAuth2Error, _protocol_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    for outage in STORE_OUTAGES:
        app.register_error_handler(outage, _store_outage)
    app.register_error_handler(Exception, _unexpected)
