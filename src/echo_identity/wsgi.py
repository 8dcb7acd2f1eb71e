"""WSGI entry point for granian workers: ``echo_identity.wsgi:create_wsgi_app`` (factory)."""

from __future__ import annotations

from flask import Flask

from echo_identity.app import create_app
from echo_identity.config import load_settings
from echo_identity.logs import configure_logging


def create_wsgi_app() -> Flask:
    """Build the app from the environment; ``echo-identity serve`` validated it already."""
    settings, _generated = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    return create_app(settings)
