"""Environments for the app under test: explicit secrets, cheap argon2, nothing from the host."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from echo_identity.accounts.sessions import SessionRecord
from echo_identity.config import Settings, load_settings
from echo_identity.db import Database
from echo_identity.services import session_store

# Cheap argon2 parameters keep the suite fast; production defaults are tested separately.
FAST_ARGON2 = {
    "ECHO_ARGON2_TIME_COST": "1",
    "ECHO_ARGON2_MEMORY_COST": "8192",
    "ECHO_ARGON2_PARALLELISM": "1",
}


def new_secret_key() -> str:
    return secrets.token_urlsafe(48)


def new_kek() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def app_environment(
    var_dir: Path, database_url: str, *, production: bool = False, **extra: str
) -> dict[str, str]:
    """ECHO_* variables for one app instance (production: https issuer behind a proxy)."""
    env = {
        "ECHO_VAR_DIR": str(var_dir),
        "ECHO_DATABASE_URL": database_url,
        "ECHO_SECRET_KEY": new_secret_key(),
        "ECHO_VAULT_KEK": new_kek(),
        "ECHO_LOG_FORMAT": "json",
        # Tests sign in, call the APIs and fail at /token many times a minute from 127.0.0.1
        # against shared servers; each limit itself is tested on a server that sets it.
        "ECHO_LOGIN_RATE_LIMIT": "10000/minute",
        "ECHO_API_RATE_LIMIT": "10000/minute",
        "ECHO_TOKEN_FAILURE_RATE_LIMIT": "10000/minute",
        **FAST_ARGON2,
    }
    if os.environ.get("ECHO_TEST_REDIS_URL"):  # the Redis suite: sessions live in Redis
        env["ECHO_REDIS_URL"] = os.environ["ECHO_TEST_REDIS_URL"]
        env["ECHO_REDIS_PREFIX"] = "echo-test:" + secrets.token_hex(6)  # isolated per app
    if production:
        env.update(ECHO_ISSUER="https://id.example.test", ECHO_TRUSTED_PROXY_HOPS="1")
    else:
        env.update(ECHO_DEV_MODE="1")
    env.update(extra)
    return env


def settings_for(env: dict[str, str]) -> Settings:
    settings, _ = load_settings(env)
    return settings


def process_environment(env: dict[str, str]) -> dict[str, str]:
    """The host environment without any ECHO_* variable, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    return {**base, **env}


def stored_sessions(env: dict[str, str], user_id: int) -> list[SessionRecord]:
    """The user's sessions as the app under ``env`` stores them (database or Redis)."""
    settings = settings_for(env)
    database = Database(settings.database_url)
    try:
        return session_store(settings, database).for_user(user_id)
    finally:
        database.dispose()
