"""The typed names of audit events (``domain.subject.action``)."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    LOGIN_SUCCESS = "auth.login.success"
    LOGIN_FAILURE = "auth.login.failure"
    LOGIN_LOCKED = "auth.login.locked"  # a sign-in refused by the login rate limit
    LOGOUT = "auth.logout"
    PASSWORD_CHANGED = "auth.password.changed"  # by the user (account page) or an admin (CLI)
    # Every session, code and token family of a user ended (disable, password change, reset)
    CREDENTIALS_REVOKED = "auth.credentials.revoked"
    USER_DISABLED = "admin.user.disabled"
    USER_ENABLED = "admin.user.enabled"
    CODE_ISSUED = "oauth.code.issued"
    CODE_REUSE_DETECTED = "oauth.code.reuse_detected"
    TOKEN_ISSUED = "oauth.token.issued"
    TOKEN_REFRESHED = "oauth.token.refreshed"
    TOKEN_REVOKED = "oauth.token.revoked"
    TOKEN_REUSE_DETECTED = "oauth.token.reuse_detected"
    TOKEN_INTROSPECTED = "oauth.token.introspected"
    USERINFO_READ = "oauth.userinfo.read"
    # A bearer API (/api/v1, /userinfo, /log) refused the presented token or its scope/subject
    API_ACCESS_DENIED = "api.access.denied"
    CODES_PURGED = "oauth.code.purged"
    TOKEN_FAMILIES_PURGED = "oauth.token_family.purged"
    ACCESS_TOKENS_PURGED = "oauth.access_token.purged"
    TOKEN_VERIFIED = "oauth.token.verified"
    TOKEN_REQUEST_FAILED = "oauth.token.failed"
    AUTHORIZATION_DENIED = "oauth.authorization.denied"
    CONSENT_GRANTED = "oauth.consent.granted"
    VAULT_TOKEN_READ = "vault.token.read"
    VAULT_TOKEN_DENIED = "vault.token.denied"
    VAULT_TOKEN_REFRESHED = "vault.token.refreshed"
    VAULT_REFRESH_FAILED = "vault.token.refresh_failed"
    VAULT_TOKEN_EXPIRED = "vault.token.expired"
    VAULT_CONNECTION_CREATED = "vault.connection.created"
    VAULT_CONNECTION_REVOKED = "vault.connection.revoked"
    VAULT_CONNECTIONS_LISTED = "vault.connection.listed"
    PROVIDER_ADDED = "admin.provider.added"
    KEY_ROTATED = "key.rotated"
    CLIENT_CREATED = "admin.client.created"
    CLIENT_DISABLED = "admin.client.disabled"
    # Incident response: a client's secret replaced, every grant of a client revoked
    CLIENT_SECRET_ROTATED = "admin.client_secret.rotated"
    CLIENT_TOKENS_REVOKED = "admin.client_tokens.revoked"
    KEY_RETIRED = "key.retired"  # a signing key removed at once (suspected compromise)
    # A user withdrew an application's access (its grants revoked, its consent deleted)
    CONSENT_WITHDRAWN = "privacy.consent.withdrawn"
    AUDIT_EVENTS_READ = "admin.audit.events_read"
    # The worker pruned what outlived its retention (counts; the chain's new signed anchor)
    RETENTION_PRUNED = "audit.retention.pruned"
    BACKUP_CREATED = "backup.created"  # an encrypted backup was taken of this database
    BACKUP_KEYS_EXPORTED = "backup.keys.exported"  # the wrapped data keys were exported
    PSEUDONYM_FORGOTTEN = "privacy.pseudonym.forgotten"  # a user's pseudonym map row deleted
    USER_EXPORTED = "privacy.user.exported"  # a user's data exported (account page or CLI)
    ERASURE_STARTED = "privacy.user.erasure_started"  # an erasure began (its record was made)
    # An erasure could not revoke a vault connection at its provider; the erasure went on
    ERASURE_UPSTREAM_FAILED = "privacy.erasure.upstream_failed"
    ERASURE_SIGNED_OUT = "privacy.user.signed_out"  # erasure: every session and grant ended
    USER_ERASED = "privacy.user.erased"  # an erasure finished; names only the pseudonym
    SESSIONS_ENDED = "admin.user.sessions_ended"  # every browser session ended (CLI)
    GRANTS_REVOKED = "admin.user.grants_revoked"  # every code and token family revoked (CLI)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
