"""structlog configuration and the redaction processor every log line goes through.

Redaction rules (pure, see :func:`redact_event`):

- a key naming a credential (password, secret, cookie, credential, api key) → ``[REDACTED]``;
- a key naming a token-like value (token, code, authorization) → ``sha256:<first 12 hex>``,
  the same fingerprint audit events use, so a token can be traced but never replayed;
- anywhere in any string: ``Bearer <value>``, JWT-shaped values and checksum-valid Echo secrets
  (``echo_rt_…``, see :mod:`echo_identity.crypto.secret_formats`) → their fingerprint;
- ``password=value``-style pairs, and a password in the prose form ``with password <value>``,
  → ``[REDACTED]`` (a password has no shape: any other prose is not recognised).

Standard-library loggers (SQLAlchemy, Alembic, granian) are routed through the same chain.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from echo_identity.crypto.digests import fingerprint
from echo_identity.crypto.secret_formats import replace_secrets

REDACTED = "[REDACTED]"
_SECRET_WORDS = {"pwd", "credential", "credentials", "kek", "dek"}
# Matched anywhere in the key once its words are joined by "_" (X-Api-Key -> x_api_key).
_SECRET_FRAGMENTS = ("password", "passwd", "secret", "cookie", "api_key", "apikey", "private_key")
_TOKEN_WORDS = {"token", "code", "authorization", "assertion", "jwt", "bearer", "ticket"}
# Keys that contain a sensitive word but never hold a secret.
_SAFE_KEYS = {
    "status_code",
    "token_fingerprint",
    "error_code",
    "token_type",
    "exit_code",
    "code_challenge_method",
    "token_type_hint",
    "error",
}
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=-]{8,})")
_KEY_SPLIT = re.compile(r"[^a-z0-9]+")
# "password=hunter2" or "client_secret: abc" inside free text (exception messages, URLs).
_INLINE_SECRET = re.compile(
    r"(?i)\b([a-z_]*(?:password|passwd|secret|token|api_?key|code))([\"']?\s*[=:]\s*[\"']?)(?!sha256:|\[REDACTED)([^\s&,;'\"]+)"
)
# "login failed for bob with password hunter2": the one prose form where the next word is
# almost always the value ("password is incorrect", "password changed" stay readable). The
# pattern starts at the password word (a cheap scan); the words before it are checked after.
_PROSE_PASSWORD = re.compile(r"(?i)pass(?:w(?:or)?d|phrase)\s+(?!sha256:|\[REDACTED)(\S+)")
_PROSE_PASSWORD_LEAD = re.compile(r"(?i)\b(?:with|using|used)\s+(?:the\s+)?$")


def _masked(value: str) -> str:
    return f"sha256:{fingerprint(value)}"


def _key_kind(key: str) -> str | None:
    lowered = key.lower()
    if lowered in _SAFE_KEYS or lowered.endswith("_fingerprint"):
        return None
    words = [part for part in _KEY_SPLIT.split(lowered) if part]
    joined = "_".join(words)
    parts = set(words) | {lowered}
    if parts & _SECRET_WORDS or any(fragment in joined for fragment in _SECRET_FRAGMENTS):
        return "secret"
    if parts & _TOKEN_WORDS or lowered.endswith("token"):
        return "token"
    return None


def scrub_text(text: str) -> str:
    """Mask credentials in free text: Echo secrets, Bearer/Basic values, JWTs, ``secret=value``
    pairs and ``with password <value>``."""
    text = replace_secrets(text, _masked)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {_masked(m.group(2))}", text)
    text = _JWT.sub(lambda m: _masked(m.group(0)), text)
    text = _INLINE_SECRET.sub(
        lambda m: m.group(1) + m.group(2) + redact_value(m.group(1), m.group(3)), text
    )
    return _PROSE_PASSWORD.sub(_prose_password, text)


def _prose_password(match: re.Match[str]) -> str:
    lead = match.string[max(0, match.start() - 12) : match.start()]
    if not _PROSE_PASSWORD_LEAD.search(lead):
        return match.group(0)
    return match.group(0)[: match.start(1) - match.start()] + REDACTED


def redact_value(key: str, value: Any) -> Any:
    """The loggable form of ``value`` stored under ``key``."""
    kind = _key_kind(key)
    if kind == "secret" and value not in (None, ""):
        return REDACTED
    if kind == "token" and value not in (None, ""):
        if isinstance(value, str | bytes):
            raw = value.decode(errors="replace") if isinstance(value, bytes) else value
            raw = raw.split(None, 1)[1] if _BEARER.match(raw) else raw
            return _masked(raw)
        if not isinstance(value, bool | int | float):
            return REDACTED
    return _redact_nested(value)


def _redact_nested(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        # A key is text too: a secret used as a key (a cache keyed by token) is masked.
        return {scrub_text(str(k)): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_nested(v) for v in value]
    return value


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor applying :func:`redact_value` to every key of the event."""
    for key in list(event_dict):
        if key in {"event", "exception"}:
            if isinstance(event_dict[key], str):
                event_dict[key] = scrub_text(event_dict[key])
            continue
        event_dict[key] = redact_value(key, event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library through one redacting JSON/console chain."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every connection at INFO; the CLI reports the revision itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
