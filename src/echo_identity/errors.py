"""The root of Echo Identity's error hierarchy.

Every error a user or client can cause is an :class:`EchoError` subclass with a stable
machine ``code`` and an HTTP ``status``; ``web.errors`` renders them without stack traces::

    EchoError
    ├── accounts.errors.AccountError   (invalid_credentials, username_taken, ...)
    └── web.errors.NotFound ...        (cross-cutting HTTP errors)
"""

from __future__ import annotations


class EchoError(Exception):
    """An expected failure with a stable ``code``, an HTTP ``status`` and a safe message."""

    code: str = "server_error"
    status: int = 500
    description: str = "The server could not complete the request."

    def __init__(self, description: str | None = None) -> None:
        if description is not None:
            self.description = description
        super().__init__(self.description)

    def headers(self) -> dict[str, str]:
        """Headers the answer must carry (e.g. a ``WWW-Authenticate`` challenge, built by the
        error itself as Authlib's errors do); none by default."""
        return {}
