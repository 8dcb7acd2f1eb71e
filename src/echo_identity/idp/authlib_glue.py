"""Our own thin glue between Flask and Authlib's framework-free authorization server.

Authlib's Flask integration wraps every request in ``FlaskOAuth2Request`` (which rebuilds the
full URL and copies the parameters into a list per name) and renders every response through
Flask's JSON provider; on ``/token`` that wrapping cost more CPU than the grant's own work.
Here the server is :class:`authlib.oauth2.AuthorizationServer` itself: the grant logic, client
authentication and error rendering are all Authlib's; only the two framework hooks are ours:

- :class:`FlaskRequest` hands Authlib the Werkzeug request's (cached) parameters and headers as
  they are. The parameters are ``request.values`` (query and form), as in Authlib's own
  integration; the token-type endpoints refuse a query string before Authlib sees the request
  (``endpoints.client_request``).
- :func:`json_response` renders Authlib's ``(status, body, headers)`` with the standard
  library's compact JSON: the same bytes a client parses, the same headers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cached_property
from typing import Any
from urllib.parse import quote

from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request
from flask import Request, Response, request

_JSON = "application/json"


class FlaskPayload(OAuth2Payload):  # type: ignore[misc]
    """The request's parameters (query string and form) for Authlib."""

    def __init__(self, request: Request) -> None:
        self._request = request

    @property
    def data(self) -> Any:
        return self._request.values

    @cached_property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, items in self._request.values.lists():
            values[key].extend(items)
        return values


def request_uri(request: Request) -> str:
    """The request's URL for Authlib (its transport check reads the scheme and host; dynamic
    registration the path): built from the scheme, host, path and raw query string.
    Werkzeug's ``request.url`` gives the same URL through IRI normalisation that cost 60 µs
    per request here, more than Authlib's whole client-credentials grant."""
    path = quote(request.root_path + request.path, safe=_PATH_SAFE)
    query = request.environ.get("QUERY_STRING", "")
    return f"{request.scheme}://{request.host}{path}" + (f"?{query}" if query else "")


_PATH_SAFE = "/%:@!$&'()*+,;=~"


class FlaskRequest(OAuth2Request):  # type: ignore[misc]
    """Authlib's view of the current Flask request."""

    def __init__(self, request: Request) -> None:
        super().__init__(request.method, request_uri(request), headers=request.headers)
        self._request = request
        self.payload = FlaskPayload(request)

    @property
    def args(self) -> Any:
        return self._request.args

    @property
    def form(self) -> Any:
        return self._request.form


class _FlaskJsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, request: Request) -> None:
        self._request = request

    @property
    def data(self) -> Any:
        return self._request.get_json()


class FlaskJsonRequest(JsonRequest):  # type: ignore[misc]
    """A JSON-bodied request (dynamic client registration style endpoints)."""

    def __init__(self, request: Request) -> None:
        super().__init__(request.method, request_uri(request), request.headers)
        self.payload = _FlaskJsonPayload(request)


def current_oauth2_request() -> FlaskRequest:
    return FlaskRequest(request)


def current_json_request() -> FlaskJsonRequest:
    return FlaskJsonRequest(request)


def json_response(status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
    """Authlib's response triple as a Flask response (a dict body as compact JSON)."""
    if isinstance(body, dict):
        body = json.dumps(body, separators=(",", ":"))
    response = Response(body, status=status)
    for name, value in headers:
        if name.lower() == "content-type":
            response.content_type = value
        else:
            response.headers.add(name, value)
    if isinstance(body, str) and not any(n.lower() == "content-type" for n, _ in headers):
        response.content_type = _JSON
    return response
