"""Input hygiene at the edge: bytes no view can handle are refused before any view runs.

A NUL byte cannot be stored in a PostgreSQL text column, bytes that are not UTF-8 cannot be
decoded without guessing, and both used to surface as a 500 from deep inside a view. This
layer runs as the first ``before_request`` hook after the request id is assigned, and answers
400 ``invalid_request`` (RFC 6749 §5.2 and RFC 6750 §3.1 name it for "malformed") with a
description that names the part of the request at fault, when it finds:

- a NUL byte or bytes that are not UTF-8 in the path (as the server percent-decoded it), the
  query string (percent-decoded), any header value (cookie values after their octal escapes);
- a forwarded client address (``X-Forwarded-For`` through the trusted proxy hops) that is not
  an IP address: it is recorded in every audit event;
- the same in a form body: ``application/x-www-form-urlencoded`` percent-decoded,
  ``multipart/form-data`` as sent (Echo takes no file uploads).

Basic credentials (RFC 6749 §2.3.1: base64 of ``urlencoded-id:urlencoded-secret``) that decode
to bytes that are not UTF-8 or contain NUL, or that are not ASCII to begin with, get the answer
every client-authenticating endpoint gives malformed credentials: 401 ``invalid_client`` with a
``WWW-Authenticate: Basic`` challenge (RFC 6749 §5.2). Base64 that does not decode at all is
left to those endpoints, which refuse it the same way.

JSON bodies are not read here: the views that take JSON parse it with
:func:`echo_identity.web.json_input.parse_json` (depth, NUL, lone surrogates).

A refused ``POST /login`` or ``POST /token`` is still a failed sign-in or token request: the
domain that owns the path registers a hook (:func:`on_refusal`) that audits it (aggregated per
window, ``audit.screen_refusals``) and, for ``/token``, counts it against
``ECHO_TOKEN_FAILURE_RATE_LIMIT``. This layer imports no domain.

Cost on the hot path: a request without a query string or body only has its path and header
values checked with ``str.isascii``; a query string or form body is percent-decoded and
UTF-8-decoded only when it is not ASCII or has an escape of NUL or of a byte above 0x7F.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Flask, Response, current_app, request

from echo_identity.errors import EchoError
from echo_identity.web.context import RequestContext, request_context
from echo_identity.web.errors import (
    MalformedClientCredentialsError,
    MalformedRequestError,
    echo_error_response,
)

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_PARTS = {
    "path": "The URL path",
    "query": "The query string",
    "form": "The form body",
    "forwarded": "The forwarded client address",
}
_DEFECTS = {
    "nul": "contains a NUL byte",
    "not_utf8": "is not valid UTF-8",
    "not_ip": "is not an IP address",
}
_HOOKS = "echo.hygiene.refusal_hooks"


@dataclass(frozen=True)
class ScreenRefusal:
    """A ``POST`` the screen refused, as a hook sees it: the wire ``code`` it was answered
    with, what was wrong (``part``, ``defect``), the client address as the server saw it, and
    the request context without the refused part (a NUL in the user agent, an "address" that
    is not one, would fail an insert)."""

    code: str
    part: str
    defect: str
    remote_addr: str
    context: RequestContext


RefusalHook = Callable[[ScreenRefusal], None]


def on_refusal(app: Flask, path: str, hook: RefusalHook) -> None:
    """Call ``hook`` whenever the screen refuses a ``POST path`` (before the refusal is sent;
    hooks run in the order they were registered): the domain that owns the path decides what
    a refusal there stands for, so this layer imports none."""
    app.extensions.setdefault(_HOOKS, {}).setdefault(path, []).append(hook)


# A percent-escape that decodes to NUL or to a byte outside ASCII.
_UNSAFE_ESCAPE = re.compile("%(?:00|[89A-Fa-f][0-9A-Fa-f])")
# A cookie value's octal escape (``"\\000"``), which Werkzeug decodes into a byte.
_COOKIE_OCTAL = re.compile(rb"\\([0-3][0-7]{2})")


@dataclass(frozen=True)
class Problem:
    """What is wrong and where: ``part`` is path, query, header, form, forwarded or
    credentials; ``defect`` is nul, not_utf8, not_ip or malformed; ``header`` names the header."""

    part: str
    defect: str
    header: str = ""

    @property
    def credentials(self) -> bool:
        return self.part == "credentials"

    def error(self) -> EchoError:
        """What the screen answers: 401 ``invalid_client`` (with its ``Basic`` challenge) for
        malformed credentials, else 400 ``invalid_request``."""
        if self.credentials:
            return MalformedClientCredentialsError(self.description())
        return MalformedRequestError(self.description())

    def description(self) -> str:
        if self.credentials:
            return "The Basic credentials are malformed."
        where = f"The {self.header} header" if self.part == "header" else _PARTS[self.part]
        return f"{where} {_DEFECTS[self.defect]}."


def text_defect(data: bytes) -> str | None:
    """``"nul"`` or ``"not_utf8"`` when ``data`` is not storable text, else ``None``."""
    if b"\x00" in data:
        return "nul"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    return None


def _wsgi_bytes(value: str) -> bytes:
    """The raw bytes of a WSGI environ string (PEP 3333: decoded as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # not a PEP 3333 string; lone surrogates stay invalid UTF-8
        return value.encode("utf-8", "surrogatepass")


def _raw_defect(value: str) -> str | None:
    if value.isascii() and "\x00" not in value:
        return None
    return text_defect(_wsgi_bytes(value))


def _percent_defect(value: str) -> str | None:
    """The defect of a percent-encoded value, judged after decoding. UTF-8 validity of the
    whole equals that of every name and value in it: the separators are ASCII."""
    if value.isascii() and "\x00" not in value and not _UNSAFE_ESCAPE.search(value):
        return None  # decodes to ASCII without NUL: the common case, without decoding
    return text_defect(unquote_to_bytes(_wsgi_bytes(value)))


def _header_name(key: str) -> str:
    return key.removeprefix("HTTP_").replace("_", "-").title()


def _basic_payload(authorization: str) -> str | None:
    """What follows ``Basic`` (split as Authlib splits it), or ``None`` for other schemes."""
    parts = authorization.split(None, 1)
    return parts[1] if len(parts) == 2 and parts[0].lower() == "basic" else None


def credentials_problem(authorization: str) -> Problem | None:
    """The problem of Basic credentials (see the module docstring), or ``None``."""
    encoded = _basic_payload(authorization)
    if encoded is None:
        return None
    if not encoded.isascii():
        return Problem("credentials", "malformed")
    try:
        decoded = base64.b64decode(encoded.strip())
    except (binascii.Error, ValueError):
        return None  # not base64: the endpoints' invalid_client
    # Authlib percent-decodes the user name and the password: judge what it will see.
    if _percent_defect(decoded.decode("latin-1")) is not None:
        return Problem("credentials", "malformed")
    return None


def environ_problem(environ: Mapping[str, Any]) -> Problem | None:
    """The first problem of everything but the body of a WSGI request, or ``None``."""
    defect = _raw_defect(environ.get("PATH_INFO", ""))
    if defect:
        return Problem("path", defect)
    query = environ.get("QUERY_STRING", "")
    if query and (defect := _percent_defect(query)):
        return Problem("query", defect)
    for key, value in environ.items():
        if (key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")) and (
            defect := _raw_defect(value)
        ):
            if key == "HTTP_AUTHORIZATION" and _basic_payload(value) is not None:
                return Problem("credentials", "malformed")
            return Problem("header", defect, _header_name(key))
    cookie = environ.get("HTTP_COOKIE", "")
    if "\\" in cookie:
        unescaped = _COOKIE_OCTAL.sub(lambda m: bytes([int(m[1], 8)]), _wsgi_bytes(cookie))
        if defect := text_defect(unescaped):
            return Problem("header", defect, "Cookie")
    authorization = environ.get("HTTP_AUTHORIZATION")
    if authorization and (problem := credentials_problem(authorization)):
        return problem
    if "werkzeug.proxy_fix.orig" in environ and not _is_ip(environ.get("REMOTE_ADDR", "")):
        return Problem("forwarded", "not_ip")
    return None


def _is_ip(value: str) -> bool:
    if len(value) > 45:  # the longest IPv6 text form; the audit column's width
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def form_problem(mimetype: str, body: bytes) -> Problem | None:
    """The problem of a form body of type ``mimetype`` (``None`` for other types)."""
    if mimetype == "application/x-www-form-urlencoded":
        defect = _percent_defect(body.decode("latin-1"))
    elif mimetype == "multipart/form-data":
        defect = text_defect(body)
    else:
        return None
    return Problem("form", defect) if defect else None


def _body_problem() -> Problem | None:
    if not request.environ.get("CONTENT_TYPE"):
        return None
    mimetype = request.mimetype  # parsed from the header on every access
    if mimetype not in FORM_TYPES:
        return None
    # Cached, so Werkzeug parses the form from these bytes; a view that reads the stream
    # itself (/log) gets a fresh one over them.
    body = request.get_data(cache=True)
    request.stream = BytesIO(body)
    return form_problem(mimetype, body)


def _screen() -> Response | None:
    """The ``before_request`` hook: ``None`` to go on, or the refusal."""
    problem = environ_problem(request.environ) or _body_problem()
    if problem is None:
        return None
    error = problem.error()
    hooks: dict[str, list[RefusalHook]] = current_app.extensions.get(_HOOKS, {})
    if request.method == "POST" and request.path in hooks:
        refusal = _refusal(error.code, problem)
        for hook in hooks[request.path]:
            hook(refusal)
    return echo_error_response(error)


def _refusal(code: str, problem: Problem) -> ScreenRefusal:
    """What the hooks are told: nothing that was typed, and not the refused part itself."""
    context = request_context()
    context = replace(
        context,
        ip=None if problem.part == "forwarded" else context.ip,
        user_agent=None if problem.header == "User-Agent" else context.user_agent,
    )
    return ScreenRefusal(code, problem.part, problem.defect, request.remote_addr or "", context)


def init_app(app: Flask) -> None:
    """Register the screen; call it right after ``request_id.init_app`` so that it runs
    before every other hook (CSRF, rate limits) and its refusal still carries a request id."""
    app.before_request(_screen)
