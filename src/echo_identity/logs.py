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

Cost: a line below its logger's level returns before anything is built (:class:`EchoLogger`);
a line that is written is redacted and rendered once, in structlog's chain, and reaches the
stdlib handlers as one finished record. Most values are plain text without any credential
shape, and :func:`scrub_text` lets them through after one regex search.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
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
# What every pattern above needs to match (an Echo secret's marker, a JWT's header, a scheme
# and its space, a key and its separator, a password word and its space): one search lets the
# text of almost every log value ("POST", "/token", an address) through without five.
_MAYBE_SECRET = re.compile(
    r"echo_|eyJ|(?i:bearer|basic)\s|(?i:pass(?:w(?:or)?d|phrase))\s"
    r"|(?i:password|passwd|secret|token|api_?key|code)[\"']?\s*[=:]"
)


def _masked(value: str) -> str:
    return f"sha256:{fingerprint(value)}"


# Keys are mostly the few names our own code logs; the bound keeps hostile nested keys cheap.
@functools.lru_cache(maxsize=1024)
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
    if _MAYBE_SECRET.search(text) is None:
        return text
    return _scrub_patterns(text)


def _scrub_patterns(text: str) -> str:
    """:func:`scrub_text` without its pre-check (which must never change the result)."""
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
    if kind is None:
        return _redact_nested(value)
    if value in (None, ""):
        return value
    if kind == "secret":
        return REDACTED
    if isinstance(value, str | bytes):
        raw = value.decode(errors="replace") if isinstance(value, bytes) else value
        raw = raw.split(None, 1)[1] if _BEARER.match(raw) else raw
        return _masked(raw)
    if not isinstance(value, bool | int | float):
        return REDACTED
    return value


def _redact_nested(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value  # the common case, before the slower Mapping check
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
    for key, value in list(event_dict.items()):
        if key in {"event", "exception"}:
            if isinstance(value, str):
                event_dict[key] = scrub_text(value)
            continue
        event_dict[key] = redact_value(key, value)
    return event_dict


_LEVEL_NAMES = {"exception": "error", "warn": "warning"}
_second_stamp: tuple[int, str] = (-1, "")


def _utc_timestamp() -> str:
    """Now as ISO 8601 in UTC with microseconds (``2026-12-01T20:55:04.123456Z``); the
    formatted second is kept, so only the fraction is formatted on most lines."""
    global _second_stamp  # one tuple swapped whole: threads never see half an update
    now = time.time()
    second = int(now)
    cached, prefix = _second_stamp
    if second != cached:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_stamp = (second, prefix)
    return f"{prefix}.{int((now - second) * 1_000_000):06d}Z"


def add_origin(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor adding ``level``, ``logger`` (the stdlib record's name for a
    standard-library record) and ``timestamp``: structlog's ``add_log_level``,
    ``add_logger_name`` and ``TimeStamper(fmt="iso", utc=True)`` in one call."""
    event_dict["level"] = _LEVEL_NAMES.get(method, method)
    record = event_dict.get("_record")
    event_dict["logger"] = record.name if record is not None else logger.name
    event_dict["timestamp"] = _utc_timestamp()
    return event_dict


# stdlib levels of the logger methods (``exception`` logs at ERROR, with the traceback).
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Set on a record whose message is a line already rendered by the structlog chain.
_RENDERED = "echo_rendered"


class EchoLogger(structlog.BoundLoggerBase):
    """The structlog logger :func:`get_logger` returns, on top of a stdlib ``logging.Logger``.

    A call below that logger's level (``logging`` caches the answer) returns at once: no event
    dict is built, no processor runs. Above it, the chain redacts and renders the line and the
    stdlib logger's handlers get it as one record, so handlers, levels and propagation stay the
    stdlib's. The level is read per call, so configuring again (or ``setLevel``) also changes
    loggers created and cached before.
    """

    _logger: logging.Logger

    def debug(self, event: str | None = None, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str | None = None, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str | None = None, **kw: Any) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str | None = None, **kw: Any) -> None:
        self._emit("error", event, kw)

    def exception(self, event: str | None = None, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self._emit("exception", event, kw)

    def critical(self, event: str | None = None, **kw: Any) -> None:
        self._emit("critical", event, kw)

    def _emit(self, method: str, event: str | None, kw: dict[str, Any]) -> None:
        level = _METHOD_LEVELS[method]
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        try:
            rendered, _ = self._process_event(method, event, kw)
        except structlog.DropEvent:
            return
        record = logger.makeRecord(logger.name, level, "", 0, rendered[0], (), None)
        setattr(record, _RENDERED, True)
        logger.handle(record)


def render_console(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
    """One readable line for a terminal: time, level, event, then ``key=value`` sorted by key
    (text as it is unless it holds a line break or another control character, then quoted,
    so a value cannot forge a line), then the traceback, if any, on the lines after.

    Development's format (``ECHO_LOG_FORMAT=console``); it costs about what a JSON line does,
    so development runs at production's speed.
    """
    event = event_dict.pop("event", "")
    timestamp = event_dict.pop("timestamp", "")
    level = event_dict.pop("level", "")
    exception = event_dict.pop("exception", None)
    fields = " ".join(f"{key}={_console_value(event_dict[key])}" for key in sorted(event_dict))
    line = f"{timestamp} [{level:<9}] {_console_value(event):<30} {fields}".rstrip()
    return f"{line}\n{exception}" if exception else line


def _console_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value.isprintable() else repr(value)
    return repr(value)


_renderer: Any = structlog.processors.JSONRenderer()


def _render(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """The last processor: the renderer of the latest :func:`configure_logging`, looked up per
    line, because a logger keeps the processors it was first used with."""
    return _renderer(logger, method, event_dict)


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """Renders standard-library records through the chain; passes the lines structlog
    rendered already (:class:`EchoLogger`) through as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _RENDERED, False):
            return str(record.msg)
        return super().format(record)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library through one redacting JSON/console chain."""
    global _renderer  # see _render
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.format_exc_info,
        redact_event,
        add_origin,  # after the redaction: our own values, never a secret
    ]
    _renderer = structlog.processors.JSONRenderer() if fmt == "json" else render_console
    structlog.configure(
        processors=[*shared, _render],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=EchoLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Formatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _render],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every connection at INFO; the CLI reports the revision itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> EchoLogger:
    """The logger ``name`` (bound on first use to the configuration of that moment)."""
    logger: EchoLogger = structlog.get_logger(name)
    return logger
