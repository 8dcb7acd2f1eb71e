"""load_settings: production refuses weak configuration, development generates its secrets once."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest

from echo_identity.config import ConfigError, load_settings
from tests.support.environment import app_environment, new_kek, new_secret_key


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return app_environment(
        tmp_path / "var", f"sqlite:///{tmp_path / 'echo.db'}", production=True, **extra
    )


def bare_dev_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Development mode with no secrets at all, so load_settings has to provide them."""
    return {"ECHO_DEV_MODE": "1", "ECHO_VAR_DIR": str(var_dir), **extra}


def config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value


def test_production_environment_from_the_test_support_loads(tmp_path: Path) -> None:
    # The baseline every refusal below departs from by exactly one variable.
    settings, generated = load_settings(production_env(tmp_path))
    assert settings.production
    assert generated == []


def test_production_without_secret_key_names_the_variable_and_how_to_generate_one(
    tmp_path: Path,
) -> None:
    env = production_env(tmp_path)
    del env["ECHO_SECRET_KEY"]

    error = config_error(env)

    assert error.variable == "ECHO_SECRET_KEY"
    message = str(error)
    assert "ECHO_SECRET_KEY" in message
    assert "generate one with" in message
    assert "secrets.token_urlsafe" in message
    assert "\n" not in message


def test_production_refuses_a_secret_key_shorter_than_32_bytes(tmp_path: Path) -> None:
    short = secrets.token_hex(16)[:31]

    error = config_error(production_env(tmp_path, ECHO_SECRET_KEY=short))

    assert error.variable == "ECHO_SECRET_KEY"
    assert "too short" in error.problem


def test_production_accepts_a_random_secret_key_of_exactly_32_bytes(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(24)
    assert len(key.encode()) == 32

    settings, _ = load_settings(production_env(tmp_path, ECHO_SECRET_KEY=key))

    assert settings.secret_key_bytes() == key.encode()


@pytest.mark.parametrize(
    "placeholder",
    [
        "change-me-" + secrets.token_urlsafe(32),
        "your_secret_key_here_" + secrets.token_urlsafe(32),
        "a" * 64,
        "ab" * 40,
    ],
    ids=["change-me", "your-secret-key-here", "one-character-run", "two-character-run"],
)
def test_production_refuses_placeholder_secret_keys(tmp_path: Path, placeholder: str) -> None:
    assert len(placeholder.encode()) >= 32  # long enough that only the placeholder rule applies

    error = config_error(production_env(tmp_path, ECHO_SECRET_KEY=placeholder))

    assert error.variable == "ECHO_SECRET_KEY"
    assert "placeholder" in error.problem


def test_production_refuses_an_http_issuer(tmp_path: Path) -> None:
    error = config_error(production_env(tmp_path, ECHO_ISSUER="http://id.example.test"))

    assert error.variable == "ECHO_ISSUER"
    assert "https" in error.problem


def test_development_accepts_an_http_issuer(tmp_path: Path) -> None:
    settings, _ = load_settings(bare_dev_env(tmp_path / "var", ECHO_ISSUER="http://localhost:8000"))

    assert settings.issuer == "http://localhost:8000"


def test_production_without_vault_kek_names_the_variable(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    del env["ECHO_VAULT_KEK"]

    error = config_error(env)

    assert error.variable == "ECHO_VAULT_KEK"
    assert "ECHO_VAULT_KEK" in str(error)


@pytest.mark.parametrize(
    "garbled",
    [
        "not-a-key",
        "!!!!",
        base64.urlsafe_b64encode(os.urandom(16)).decode(),
        base64.urlsafe_b64encode(os.urandom(33)).decode(),
        new_kek() + ",garbage",
        new_kek() + ",",
    ],
    ids=["not-base64", "no-base64-characters", "16-bytes", "33-bytes", "second-garbled", "empty"],
)
def test_garbled_vault_kek_is_refused_naming_the_variable(tmp_path: Path, garbled: str) -> None:
    error = config_error(production_env(tmp_path, ECHO_VAULT_KEK=garbled))

    assert error.variable == "ECHO_VAULT_KEK"
    assert "ECHO_VAULT_KEK" in str(error)


def test_several_comma_separated_keks_are_accepted_in_order(tmp_path: Path) -> None:
    keys = [os.urandom(32) for _ in range(3)]
    encoded = [base64.urlsafe_b64encode(key).decode() for key in keys]

    settings, _ = load_settings(
        production_env(tmp_path, ECHO_VAULT_KEK=f"{encoded[0]},{encoded[1]}, {encoded[2]}")
    )

    assert settings.vault_keks() == keys


@pytest.mark.parametrize("value", ["5", "abc", "901", "-600"])
def test_invalid_access_token_ttl_names_the_variable(tmp_path: Path, value: str) -> None:
    error = config_error(production_env(tmp_path, ECHO_ACCESS_TOKEN_TTL=value))

    assert error.variable == "ECHO_ACCESS_TOKEN_TTL"
    assert str(error).startswith("ECHO_ACCESS_TOKEN_TTL ")


@pytest.mark.parametrize("value", ["ten per minute", "10/fortnight"])
def test_unparsable_login_rate_limit_names_the_variable(tmp_path: Path, value: str) -> None:
    error = config_error(production_env(tmp_path, ECHO_LOGIN_RATE_LIMIT=value))

    assert error.variable == "ECHO_LOGIN_RATE_LIMIT"


def test_development_generates_missing_secrets_into_var_dir_owner_only(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"

    settings, generated = load_settings(bare_dev_env(var_dir))

    assert {secret.variable for secret in generated} == {"ECHO_SECRET_KEY", "ECHO_VAULT_KEK"}
    for secret in generated:
        assert secret.path.parent == var_dir
        assert stat.S_IMODE(secret.path.stat().st_mode) == 0o600
    by_variable = {secret.variable: secret.path.read_text().strip() for secret in generated}
    assert settings.secret_key_bytes() == by_variable["ECHO_SECRET_KEY"].encode()
    assert len(settings.secret_key_bytes()) >= 32
    assert settings.vault_kek is not None
    assert settings.vault_kek.get_secret_value() == by_variable["ECHO_VAULT_KEK"]
    assert len(settings.vault_keks()) == 1


def test_development_reuses_the_secrets_generated_by_an_earlier_load(tmp_path: Path) -> None:
    env = bare_dev_env(tmp_path / "var")
    first, first_generated = load_settings(env)

    second, second_generated = load_settings(env)

    assert second.secret_key_bytes() == first.secret_key_bytes()
    assert second.vault_keks() == first.vault_keks()
    assert second_generated == first_generated


def test_development_never_writes_a_secret_given_in_the_environment(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    secret_key = new_secret_key()

    _, generated = load_settings(bare_dev_env(var_dir, ECHO_SECRET_KEY=secret_key))

    assert [secret.variable for secret in generated] == ["ECHO_VAULT_KEK"]
    assert not (var_dir / "secret_key").exists()
    for path in var_dir.rglob("*"):
        assert secret_key not in path.read_text()


def test_development_with_both_secrets_given_leaves_var_dir_without_secret_files(
    tmp_path: Path,
) -> None:
    var_dir = tmp_path / "var"

    _, generated = load_settings(
        bare_dev_env(var_dir, ECHO_SECRET_KEY=new_secret_key(), ECHO_VAULT_KEK=new_kek())
    )

    assert generated == []
    assert not var_dir.exists() or list(var_dir.iterdir()) == []


def test_default_database_is_sqlite_under_var_dir(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"

    settings, _ = load_settings(bare_dev_env(var_dir))

    assert settings.database_url == f"sqlite:///{var_dir.resolve() / 'echo-identity.db'}"


def test_variables_without_the_echo_prefix_are_ignored(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    good_key = env.pop("ECHO_SECRET_KEY")
    env.update(SECRET_KEY=good_key, DEV_MODE="1", ACCESS_TOKEN_TTL="5")

    error = config_error(env)

    assert error.variable == "ECHO_SECRET_KEY"


def test_process_environment_is_ignored_when_a_mapping_is_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_DEV_MODE", "1")
    monkeypatch.setenv("ECHO_ACCESS_TOKEN_TTL", "5")
    monkeypatch.setenv("ECHO_SECRET_KEY", new_secret_key())
    env = production_env(tmp_path)

    settings, _ = load_settings(env)
    assert settings.production
    assert settings.access_token_ttl == 600

    del env["ECHO_SECRET_KEY"]
    assert config_error(env).variable == "ECHO_SECRET_KEY"


def test_redis_namespace_differs_per_issuer_so_deployments_sharing_redis_stay_apart(
    tmp_path: Path,
) -> None:
    env = production_env(tmp_path)
    env.pop("ECHO_REDIS_PREFIX", None)
    staging, _ = load_settings({**env, "ECHO_ISSUER": "https://staging.example.test"})
    production, _ = load_settings({**env, "ECHO_ISSUER": "https://id.example.test"})
    assert staging.redis_namespace != production.redis_namespace
    assert staging.redis_namespace.startswith("echo:")


def test_explicit_redis_prefix_wins(tmp_path: Path) -> None:
    settings, _ = load_settings(production_env(tmp_path, ECHO_REDIS_PREFIX="tenant-a"))
    assert settings.redis_namespace == "tenant-a"


def test_a_dotenv_file_in_the_working_directory_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(f"ECHO_SECRET_KEY={new_secret_key()}\nECHO_DEV_MODE=1\n")
    monkeypatch.chdir(tmp_path)
    env = production_env(tmp_path)
    del env["ECHO_SECRET_KEY"]
    assert config_error(env).variable == "ECHO_SECRET_KEY"
