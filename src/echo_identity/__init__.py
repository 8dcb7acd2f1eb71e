"""Echo Identity: OpenID Connect provider, token vault and audit trail in one service."""

__version__ = "0.1.0"
