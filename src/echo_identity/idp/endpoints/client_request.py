"""The request rules every client-authenticated POST endpoint shares (/token, /revoke,
/introspect, /verify), checked before any client is looked up.

- RFC 6749 §2.3: a client uses one authentication method per request. An ``Authorization:
  Basic`` header beside ``client_secret`` (or ``client_assertion``) in the body, or beside a
  body ``client_id`` naming another client, is two methods: 400 ``invalid_request``. A body
  ``client_id`` equal to the Basic user name is allowed (many clients send it).
- RFC 6749 §3.2 / §3.1: parameters come in the POST body, each at most once. A query string,
  or a body parameter sent twice, is 400 ``invalid_request``. (Authlib reads the query string
  and the body as one dictionary and keeps the first value of a repeated parameter, so without
  this rule ``?grant_type=`` and ``grant_type=a&grant_type=b`` would be honoured.)
- Credentials that cannot be what a client sent in good faith (Basic that is not base64, not
  UTF-8, without a colon, or with a control character such as NUL; the same characters in a
  body ``client_id``/``client_secret``) are ``invalid_client`` (401 for Basic, as RFC 6749 §5.2
  requires for header authentication), refused here so that such bytes never reach a query.

Errors are Authlib's (:class:`InvalidRequestError`, :class:`InvalidClientError`), so each
endpoint renders them as it renders its other protocol errors.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from flask import Request, Response, request

from echo_identity.idp.provider import Provider
from echo_identity.web.context import service

# Any C0 control character or DEL: never part of a client id or secret we issue.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PARAMETER_NAME = re.compile(r"[a-z_]{1,40}")
_CLIENT_FIELDS = ("client_id", "client_secret")
_ASSERTION_FIELDS = ("client_assertion", "client_assertion_type")


def check_client_request(request: Request) -> None:
    """Refuse a request that breaks RFC 6749 §2.3 or §3.2 (see the module docstring).

    Returns ``None`` when the request may go on to client authentication. Raises
    :class:`InvalidClientError` for malformed credentials and :class:`InvalidRequestError`
    for a query string, a repeated body parameter or more than one authentication method.
    """
    basic = basic_credentials(request.headers.get("Authorization"))
    form = request.form
    for name in _CLIENT_FIELDS:
        if name in form and not well_formed(form[name]):
            raise InvalidClientError(description=f"The '{name}' parameter is malformed.")
    if request.args:
        raise InvalidRequestError("Send the parameters in the POST body, not in the URL.")
    repeated = [name for name in form if len(form.getlist(name)) > 1]
    if repeated:
        name = repeated[0]
        what = f"'{name}' is" if _PARAMETER_NAME.fullmatch(name) else "A parameter is"
        raise InvalidRequestError(f"{what} repeated; send each parameter once.")
    assertion = any(name in form for name in _ASSERTION_FIELDS)
    if basic is not None:
        basic_id = basic[0]
        if "client_secret" in form or assertion:
            raise InvalidRequestError(_ONE_METHOD)
        if "client_id" in form and form["client_id"] != basic_id:
            raise InvalidRequestError(_ONE_METHOD)
    elif assertion and "client_secret" in form:
        raise InvalidRequestError(_ONE_METHOD)


_ONE_METHOD = "Use exactly one client authentication method (RFC 6749 section 2.3)."


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The (client id, secret) of an ``Authorization: Basic`` header, decoded as RFC 6749
    §2.3.1 prescribes (base64 of ``urlencoded-id:urlencoded-secret``), or ``None`` when the
    header is absent or uses another scheme.

    Raises :class:`InvalidClientError` (401) when the Basic credentials are malformed.
    """
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        # ``unquote`` as Authlib does it, but strict: invalid UTF-8 is refused, not replaced
        client_id = unquote(client_id, errors="strict")
        secret = unquote(secret, errors="strict")
    except (binascii.Error, UnicodeError, ValueError):
        raise _malformed_basic() from None
    if not colon or not client_id or not well_formed(client_id) or not well_formed(secret):
        raise _malformed_basic()
    return client_id, secret


def claimed_client_id(request: Request) -> str | None:
    """The client id a request claims (the Basic user name, else the body ``client_id``) when
    it is well formed, for audit records; ``None`` otherwise. Never raises."""
    try:
        basic = basic_credentials(request.headers.get("Authorization"))
    except InvalidClientError:
        basic = None
    claimed = basic[0] if basic else request.form.get("client_id")
    return claimed if claimed and well_formed(claimed) else None


def well_formed(value: str) -> bool:
    """Whether ``value`` is free of control characters (NUL included) and lone surrogates."""
    if _CONTROL.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _malformed_basic() -> InvalidClientError:
    return InvalidClientError(status_code=401, description="The Basic credentials are malformed.")


def checked_endpoint_response(endpoint: str) -> Response:
    """Authlib's response of the registered ``endpoint`` (``"revocation"``,
    ``"introspection"``) for this request, or the refusal of :func:`check_client_request`
    rendered as that endpoint renders its protocol errors."""
    server = service(Provider).server
    try:
        check_client_request(request)
    except OAuth2Error as error:
        refused: Response = server.handle_error_response(None, error)
        return refused
    response: Response = server.create_endpoint_response(endpoint)
    return response
