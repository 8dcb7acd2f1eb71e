"""Access to the per-app :class:`~echo_identity.idp.provider.Provider` from request code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from echo_identity.idp.provider import Provider


def current_provider() -> Provider:
    provider: Provider = current_app.extensions["echo.idp"]
    return provider
