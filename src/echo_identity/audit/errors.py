"""Errors the audit trail answers callers with (all HTTP 400)::

    EchoError
    ├── InvalidEventQueryError     invalid_request   (GET /api/v1/audit/events parameters)
    ├── InvalidWindowError         invalid_since     (the admin report's ``since``)
    └── LogBodyError               invalid_request   (POST /log bodies)
        ├── BodyTooLargeError      body_too_large
        ├── BatchTooLargeError     batch_too_large
        ├── InvalidLogEventError   invalid_log_event
        └── UnknownLevelError      unknown_level

A /log body that is not JSON, or too deep, is refused by
:class:`echo_identity.web.json_input.InvalidJsonError` (``invalid_json``, ``json_too_deep``).
Bearer refusals at /log and at the events API are the identity provider's
(:mod:`echo_identity.idp.errors`, RFC 6750 §3.1).
"""

from __future__ import annotations

from echo_identity.errors import EchoError


class InvalidEventQueryError(EchoError):
    """A filter of ``GET /api/v1/audit/events`` is not what the OpenAPI document allows."""

    code = "invalid_request"
    status = 400
    description = "A query parameter is invalid."


class InvalidWindowError(EchoError):
    """The security report's ``since`` is neither a duration nor an ISO 8601 date."""

    code = "invalid_since"
    status = 400
    description = "since must be a duration (30m, 24h, 7d, 2w) or an ISO 8601 date."


class LogBodyError(EchoError):
    """A ``POST /log`` body that cannot be stored; nothing of the batch is kept."""

    code = "invalid_request"
    status = 400


class BodyTooLargeError(LogBodyError):
    """The body is longer than ``ECHO_LOG_MAX_BODY_BYTES``."""

    code = "body_too_large"


class BatchTooLargeError(LogBodyError):
    """The batch holds more events than ``ECHO_LOG_MAX_BATCH``."""

    code = "batch_too_large"


class InvalidLogEventError(LogBodyError):
    """An event is not an object of level, message, timestamp and fields as documented."""

    code = "invalid_log_event"


class UnknownLevelError(LogBodyError):
    """An event's level is not one of debug, info, warning, error, critical."""

    code = "unknown_level"
