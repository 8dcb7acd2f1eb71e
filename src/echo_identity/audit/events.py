"""The typed names of audit events (``domain.subject.action``)."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    LOGIN_SUCCESS = "auth.login.success"
    LOGIN_FAILURE = "auth.login.failure"
    LOGOUT = "auth.logout"
    CODE_ISSUED = "oauth.code.issued"
    CODE_REUSE_DETECTED = "oauth.code.reuse_detected"
    TOKEN_ISSUED = "oauth.token.issued"
    TOKEN_REFRESHED = "oauth.token.refreshed"
    TOKEN_REVOKED = "oauth.token.revoked"
    TOKEN_REUSE_DETECTED = "oauth.token.reuse_detected"
    TOKEN_INTROSPECTED = "oauth.token.introspected"
    TOKEN_VERIFIED = "oauth.token.verified"
    TOKEN_REQUEST_FAILED = "oauth.token.failed"
    AUTHORIZATION_DENIED = "oauth.authorization.denied"
    CONSENT_GRANTED = "oauth.consent.granted"
    KEY_ROTATED = "key.rotated"
    CLIENT_CREATED = "admin.client.created"
    CLIENT_DISABLED = "admin.client.disabled"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
