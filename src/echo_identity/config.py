"""Settings: every ``ECHO_*`` variable, its validation, and production vs development.

Settings come from the process environment only (never from a ``.env`` file, so production
secrets are injected by the service manager). :func:`load_settings` is the single entry point:

- in production (the default) a missing, short or placeholder secret, or a non-https issuer,
  raises :class:`ConfigError` naming the variable and how to generate a good value;
- in development (``ECHO_DEV_MODE=1``) missing secrets are generated once, kept under
  ``ECHO_VAR_DIR`` with owner-only permissions, and a warning says so.

Every variable is documented in ``docs/configuration.md``; a test keeps the two in step.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from echo_identity.business_hours import BusinessHours

ENV_PREFIX = "ECHO_"
MIN_SECRET_BYTES = 32
KEK_BYTES = 32
DEV_ISSUER = "http://127.0.0.1:8000"

SECRET_KEY_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(64))'"  # noqa: S105
VAULT_KEK_HINT = (
    "generate one with: python3 -c 'import base64, os; "
    "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
)

# Fragments that betray a value copied from an example file rather than generated.
_PLACEHOLDER_MARKERS = (
    "changeme",
    "change-me",
    "change_me",
    "replace",
    "your_",
    "your-",
    "example",
    "placeholder",
    "secretkey",
    "secret_key",
    "secret-key",
    "insecure",
    "dummy",
    "default",
)


class ConfigError(Exception):
    """A setting is missing or unusable; ``str()`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str, hint: str = "") -> None:
        self.variable = variable
        self.problem = problem
        self.hint = hint
        super().__init__(f"{variable} {problem}" + (f"; {hint}" if hint else ""))


class Settings(BaseSettings):
    """Typed view of the ``ECHO_*`` environment. Use :func:`load_settings` to obtain one."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    dev_mode: bool = False
    issuer: str = ""
    database_url: str = ""
    secret_key: SecretStr | None = None
    vault_kek: SecretStr | None = None
    # An AWS KMS key (key id or alias; not a secret) that wraps DEKs instead of ECHO_VAULT_KEK.
    kms_key_id: str | None = None
    kms_region: str | None = None  # None: boto3's own resolution (AWS_REGION, ~/.aws/config …)
    redis_url: str | None = None
    redis_prefix: str = ""
    var_dir: Path = Path("var")

    access_token_ttl: int = Field(default=600, ge=300, le=900)
    id_token_ttl: int = Field(default=600, ge=60, le=3600)
    auth_code_ttl: int = Field(default=60, ge=10, le=600)
    refresh_token_idle_ttl: int = Field(default=1_209_600, ge=300)
    refresh_token_absolute_ttl: int = Field(default=2_592_000, ge=300)
    session_idle_timeout: int = Field(default=1800, ge=60)
    session_absolute_timeout: int = Field(default=36_000, ge=60)

    login_rate_limit: str = "10/minute;100/hour"
    token_failure_rate_limit: str = "30/minute"  # noqa: S105 - a rate, not a secret
    api_rate_limit: str = "600/minute"
    vault_refresh_window: int = Field(default=300, ge=30, le=86_400)
    worker_interval: int = Field(default=30, ge=1, le=3600)
    # Audit sealing: events younger than this many seconds wait for the next pass (docs/audit.md).
    audit_seal_grace: float = Field(default=2.0, ge=0, le=300)
    key_publish_ahead: int = Field(default=3600, ge=10, le=30 * 86_400)

    trusted_proxy_hops: int = Field(default=0, ge=0, le=5)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console", ""] = ""

    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_cost: int = Field(default=65_536, ge=8_192, le=1_048_576)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)

    # Audiences of Echo's own bearer APIs (docs/oidc.md "Audiences"): a token must name the
    # API it is presented to. Empty: derived from the issuer.
    api_audience: str = ""  # /api/v1 (vault and audit events API); default "<issuer>/api/v1"
    userinfo_audience: str = ""  # /userinfo; default "<issuer>/userinfo"
    # /log ingestion (application logs from services holding a logs:write token).
    log_audience: str = ""  # default: "<issuer>/log"
    log_max_body_bytes: int = Field(default=262_144, ge=1024, le=1_048_576)
    log_max_batch: int = Field(default=100, ge=1, le=1000)
    # Detection rules (docs/audit.md "Detection rules" cites where each default comes from).
    detect_login_failures: int = Field(default=5, ge=2)
    detect_login_window: int = Field(default=900, ge=60)
    detect_spray_accounts: int = Field(default=10, ge=2)
    detect_spray_window: int = Field(default=900, ge=60)
    detect_vault_denials: int = Field(default=5, ge=2)
    detect_vault_denial_window: int = Field(default=900, ge=60)
    detect_new_prefix_days: int = Field(default=30, ge=1, le=365)
    detect_rate_factor: float = Field(default=10.0, ge=2.0)
    detect_rate_min_reads: int = Field(default=50, ge=5)
    detect_rate_baseline_days: int = Field(default=7, ge=1, le=90)
    business_hours: str = ""  # "08:00-18:00"; empty disables the rule
    business_days: str = "mon-fri"
    business_timezone: str = "UTC"
    alert_dedup_window: int = Field(default=3600, ge=0)
    # Repeated identical refusals (lock-outs, denied API calls from one address) are recorded
    # once per this many seconds, with a count (docs/audit.md "Bounded writes").
    audit_refusal_window: int = Field(default=60, ge=1, le=3600)
    # Retention (docs/audit.md "Retention and pruning"): sealed audit events, application logs
    # and alerts older than this many days are pruned by the worker; 0 keeps them forever.
    audit_retention_days: int = Field(default=400, ge=0, le=36_500)
    app_log_retention_days: int = Field(default=30, ge=0, le=36_500)
    alert_retention_days: int = Field(default=400, ge=0, le=36_500)
    # Alert delivery channels: each one is enabled by its address setting.
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    alert_smtp_host: str | None = None
    alert_smtp_port: int = Field(default=587, ge=1, le=65_535)
    alert_smtp_starttls: bool = True
    alert_smtp_username: str | None = None
    alert_smtp_password: SecretStr | None = None
    alert_smtp_from: str = "echo-identity@localhost"
    alert_smtp_to: str = ""  # comma-separated
    alert_syslog_address: str | None = None  # udp://host:514 or tcp://host:601
    alert_delivery_timeout: float = Field(default=5.0, gt=0, le=60)
    alert_retry_base: int = Field(default=30, ge=1)
    alert_retry_max: int = Field(default=3600, ge=1)
    # Security reports and /metrics (docs/audit.md "Security reports, metrics and the events API").
    signing_key_max_age_days: int = Field(default=90, ge=1, le=3650)
    data_key_max_age_days: int = Field(default=365, ge=1, le=3650)
    metrics_token: SecretStr | None = None  # Bearer for /metrics; unset: open in dev, off in prod
    # Backups (docs/backup.md): a key of their own, never a vault KEK (checked at load).
    backup_key: SecretStr | None = None
    backup_kms_key_id: str | None = None  # an AWS KMS key instead of ECHO_BACKUP_KEY

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() hands over the environment explicitly, so tests and the CLI see
        # exactly the mapping they pass; .env files are never read.
        return (init_settings,)

    @property
    def production(self) -> bool:
        return not self.dev_mode

    @property
    def redis_namespace(self) -> str:
        """Prefix of every Redis key; by default unique per issuer, so deployments sharing a
        Redis server never see each other's sessions or counters."""
        if self.redis_prefix:
            return self.redis_prefix
        return "echo:" + hashlib.sha256(self.issuer.encode()).hexdigest()[:12]

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("console" if self.dev_mode else "json")

    @property
    def effective_log_audience(self) -> str:
        """The audience a /log access token must carry (``ECHO_LOG_AUDIENCE``)."""
        return self.log_audience or self.issuer.rstrip("/") + "/log"

    @property
    def effective_api_audience(self) -> str:
        """The audience an /api/v1 access token must carry (``ECHO_API_AUDIENCE``)."""
        return self.api_audience or self.issuer.rstrip("/") + "/api/v1"

    @property
    def effective_userinfo_audience(self) -> str:
        """The audience a /userinfo access token must carry (``ECHO_USERINFO_AUDIENCE``)."""
        return self.userinfo_audience or self.issuer.rstrip("/") + "/userinfo"

    def secret_key_bytes(self) -> bytes:
        """The validated ``ECHO_SECRET_KEY``; raises :class:`ConfigError` when unset."""
        if self.secret_key is None:
            raise ConfigError("ECHO_SECRET_KEY", "is not set", SECRET_KEY_HINT)
        return self.secret_key.get_secret_value().encode()

    def vault_keks(self) -> list[bytes]:
        """Every configured local KEK (``ECHO_VAULT_KEK``), first one encrypts unless
        ``ECHO_KMS_KEY_ID`` is set, in which case they only unwrap; empty when only
        ``ECHO_KMS_KEY_ID`` is set.

        Raises:
            ConfigError: neither variable is set, or ``ECHO_VAULT_KEK`` is garbled.
        """
        if self.vault_kek is None:
            if self.kms_key_id is not None:
                return []
            raise ConfigError(
                "ECHO_VAULT_KEK",
                "is not set and neither is ECHO_KMS_KEY_ID (one of them is required)",
                VAULT_KEK_HINT + ", or set ECHO_KMS_KEY_ID to an AWS KMS key",
            )
        return parse_keks(self.vault_kek.get_secret_value())


@dataclass(frozen=True)
class GeneratedSecret:
    variable: str
    path: Path


def parse_keks(value: str) -> list[bytes]:
    """Decode a comma-separated list of base64url 32-byte keys; raises :class:`ConfigError`."""
    keys: list[bytes] = []
    for part in (p.strip() for p in value.split(",")):
        try:
            key = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except ValueError:
            key = b""
        if len(key) != KEK_BYTES:
            raise ConfigError(
                "ECHO_VAULT_KEK",
                f"must be base64url-encoded {KEK_BYTES}-byte keys separated by commas",
                VAULT_KEK_HINT,
            )
        keys.append(key)
    return keys


def secret_weakness(value: str) -> str | None:
    """Why ``value`` is unfit as a secret, or ``None`` when it looks generated."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is too short (at least {MIN_SECRET_BYTES} bytes)"
    lowered = value.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS) or len(set(value)) < 10:
        return "looks like a placeholder, not a random value"
    return None


def _check_issuer(settings: Settings) -> None:
    parts = urlsplit(settings.issuer)
    if not settings.issuer:
        raise ConfigError("ECHO_ISSUER", "is not set", "set it to the public https URL")
    if parts.query or parts.fragment or not parts.netloc:
        raise ConfigError("ECHO_ISSUER", "must be an absolute URL with no query or fragment")
    if settings.production and parts.scheme != "https":
        raise ConfigError(
            "ECHO_ISSUER", "must use https in production", "terminate TLS at your proxy"
        )
    if parts.scheme not in {"http", "https"}:
        raise ConfigError("ECHO_ISSUER", "must be an http(s) URL")


def _check_production_secrets(settings: Settings) -> None:
    if settings.secret_key is None:
        raise ConfigError("ECHO_SECRET_KEY", "is not set", SECRET_KEY_HINT)
    weakness = secret_weakness(settings.secret_key.get_secret_value())
    if weakness:
        raise ConfigError("ECHO_SECRET_KEY", weakness, SECRET_KEY_HINT)
    settings.vault_keks()


def _dev_secret(var_dir: Path, name: str, generate: str) -> tuple[str, Path]:
    """Read, or create once with mode 0600, the development secret ``var_dir/name``."""
    var_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = var_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), path
    with os.fdopen(fd, "w") as handle:
        handle.write(generate + "\n")
    return generate, path


def _with_dev_secrets(settings: Settings) -> tuple[Settings, list[GeneratedSecret]]:
    updates: dict[str, object] = {}
    generated: list[GeneratedSecret] = []
    if settings.secret_key is None:
        value, path = _dev_secret(settings.var_dir, "secret_key", secrets.token_urlsafe(64))
        updates["secret_key"] = SecretStr(value)
        generated.append(GeneratedSecret("ECHO_SECRET_KEY", path))
    if settings.vault_kek is None and settings.kms_key_id is None:
        kek = base64.urlsafe_b64encode(os.urandom(KEK_BYTES)).decode()
        value, path = _dev_secret(settings.var_dir, "vault_kek", kek)
        updates["vault_kek"] = SecretStr(value)
        generated.append(GeneratedSecret("ECHO_VAULT_KEK", path))
    return settings.model_copy(update=updates), generated


def load_settings(
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[GeneratedSecret]]:
    """Build validated settings from ``environ`` (default: ``os.environ``).

    Returns the settings and the development secrets that were generated or reused from
    ``var/`` (always empty in production). Raises :class:`ConfigError` for the first problem.
    """
    env = dict(os.environ if environ is None else environ)
    try:
        settings = Settings.model_validate(_from_environ(env))
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else "ECHO_*"
        raise ConfigError(variable, f"is invalid: {first['msg']}") from None

    defaults: dict[str, object] = {}
    if not settings.database_url:
        defaults["database_url"] = f"sqlite:///{settings.var_dir.resolve() / 'echo-identity.db'}"
    if not settings.issuer and settings.dev_mode:
        defaults["issuer"] = DEV_ISSUER
    settings = settings.model_copy(update=defaults)
    _check_issuer(settings)
    if settings.session_absolute_timeout < settings.session_idle_timeout:
        raise ConfigError(
            "ECHO_SESSION_ABSOLUTE_TIMEOUT", "must be at least ECHO_SESSION_IDLE_TIMEOUT"
        )

    for variable, value in (
        ("ECHO_LOGIN_RATE_LIMIT", settings.login_rate_limit),
        ("ECHO_TOKEN_FAILURE_RATE_LIMIT", settings.token_failure_rate_limit),
        ("ECHO_API_RATE_LIMIT", settings.api_rate_limit),
    ):
        try:
            parse_many(value)
        except ValueError:
            raise ConfigError(
                variable, "is not a rate limit", 'write e.g. "10/minute;100/hour"'
            ) from None

    _check_monitoring(settings)

    generated: list[GeneratedSecret] = []
    if settings.dev_mode:
        settings, generated = _with_dev_secrets(settings)
    else:
        _check_production_secrets(settings)
    settings.vault_keks()
    _check_backup_key(settings)
    return settings, generated


def _check_backup_key(settings: Settings) -> None:
    """``ECHO_BACKUP_KEY`` decodes, and neither backup key is one of the vault's KEKs (a backup
    must not open with the key that guards the live secrets).

    Raises:
        ConfigError: the key is garbled, equals a key in ``ECHO_VAULT_KEK``, or
            ``ECHO_BACKUP_KMS_KEY_ID`` names ``ECHO_KMS_KEY_ID``'s key.
    """
    if settings.backup_key is not None:
        try:
            (key,) = parse_keks(settings.backup_key.get_secret_value())
        except (ConfigError, ValueError):
            raise ConfigError(
                "ECHO_BACKUP_KEY",
                f"must be one base64url-encoded {KEK_BYTES}-byte key",
                VAULT_KEK_HINT,
            ) from None
        if settings.vault_kek is not None and key in settings.vault_keks():
            raise ConfigError(
                "ECHO_BACKUP_KEY",
                "equals a key in ECHO_VAULT_KEK; backups need a key of their own",
                VAULT_KEK_HINT,
            )
    if settings.backup_kms_key_id is not None and settings.backup_kms_key_id == settings.kms_key_id:
        raise ConfigError(
            "ECHO_BACKUP_KMS_KEY_ID",
            "names the same KMS key as ECHO_KMS_KEY_ID; backups need a key of their own",
        )


def _check_monitoring(settings: Settings) -> None:
    try:
        BusinessHours.parse(
            settings.business_hours, settings.business_days, settings.business_timezone
        )
    except ValueError as exc:
        raise ConfigError("ECHO_BUSINESS_HOURS", f"is invalid: {exc}") from None
    if settings.alert_webhook_url:
        if urlsplit(settings.alert_webhook_url).scheme not in {"http", "https"}:
            raise ConfigError("ECHO_ALERT_WEBHOOK_URL", "must be an http(s) URL")
        secret = settings.alert_webhook_secret
        if secret is None or len(secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                "ECHO_ALERT_WEBHOOK_SECRET",
                f"must be set (at least {MIN_SECRET_BYTES} bytes) when ECHO_ALERT_WEBHOOK_URL is",
                SECRET_KEY_HINT,
            )
    syslog = urlsplit(settings.alert_syslog_address or "udp://-")
    if syslog.scheme not in {"udp", "tcp"} or not syslog.hostname:
        raise ConfigError("ECHO_ALERT_SYSLOG_ADDRESS", "must be udp://host:port or tcp://host:port")


def _from_environ(env: Mapping[str, str]) -> dict[str, str]:
    """Keep the ``ECHO_*`` variables, keyed by field name, empty values treated as unset."""
    fields = Settings.model_fields
    values: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and value != "":
            name = key[len(ENV_PREFIX) :].lower()
            if name in fields:
                values[name] = value
    return values


def database_url_for_sqlalchemy(url: str) -> str:
    """Select psycopg 3 for plain ``postgresql://`` URLs so users can paste libpq URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
