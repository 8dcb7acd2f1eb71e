"""Log redaction: credentials never reach a log line; tokens appear only as fingerprints."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from echo_identity.app import create_app
from echo_identity.config import Settings
from echo_identity.crypto.digests import fingerprint
from echo_identity.crypto.secret_formats import SecretKind, mint
from echo_identity.db import Database
from echo_identity.logs import (
    _scrub_patterns,
    configure_logging,
    get_logger,
    redact_event,
    redact_value,
    scrub_text,
)

# Shaped like the real thing so the free-text patterns have something to find.
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"
BEARER_TOKEN = "at-9QvX2mKp7RtL4wZs"


def masked(value: str) -> str:
    return f"sha256:{fingerprint(value)}"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "new_password",
        "client_secret",
        "clientSecret",
        "cookie",
        "Set-Cookie",
        "credentials",
        "api_key",
        "apiKey",
        "vault_kek",
    ],
)
def test_credential_keys_are_replaced_by_redacted(key: str) -> None:
    assert redact_value(key, "hunter2-hunter2") == "[REDACTED]"


@pytest.mark.parametrize(
    "key", ["X-Api-Key", "user_api_key", "signing_private_key", "sessionCookie"]
)
def test_credential_keys_in_compound_or_header_spelling_are_redacted(key: str) -> None:
    # The module promises api keys, private keys and cookies are redacted however the key is
    # spelled; today the multi-word words only match when they are the whole key.
    assert redact_value(key, "hunter2-hunter2") == "[REDACTED]"


@pytest.mark.parametrize(
    "key", ["access_token", "refresh_token", "id_token_hint", "code", "authorization", "jwt"]
)
def test_token_keys_are_replaced_by_their_fingerprint(key: str) -> None:
    value = "tok-" + key

    redacted = redact_value(key, value)

    assert redacted == masked(value)
    assert re.fullmatch(r"sha256:[0-9a-f]{12}", redacted)


def test_token_given_as_bytes_has_the_fingerprint_of_its_text() -> None:
    assert redact_value("refresh_token", b"rt-abcdef") == masked("rt-abcdef")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "Basic"])
def test_authorization_header_is_fingerprinted_without_its_scheme(scheme: str) -> None:
    # The fingerprint must equal the one audit events record for the bare token.
    assert redact_value("authorization", f"{scheme} {BEARER_TOKEN}") == masked(BEARER_TOKEN)


@pytest.mark.parametrize("separator", ["  ", "\t"], ids=["two-spaces", "tab"])
def test_authorization_header_with_other_whitespace_is_fingerprinted_without_its_scheme(
    separator: str,
) -> None:
    assert redact_value("authorization", f"Bearer{separator}{BEARER_TOKEN}") == masked(BEARER_TOKEN)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("status_code", "302"),
        ("token_fingerprint", "sha256:9f86d081884c"),
        ("refresh_token_fingerprint", "sha256:9f86d081884c"),
        ("token_type", "Bearer"),
        ("error_code", "invalid_grant"),
    ],
)
def test_safe_keys_containing_sensitive_words_are_left_alone(key: str, value: str) -> None:
    assert redact_value(key, value) == value


def test_unset_credentials_are_logged_as_unset() -> None:
    assert redact_value("password", None) is None
    assert redact_value("access_token", "") == ""


def test_non_text_token_values_are_redacted_not_rendered() -> None:
    assert redact_value("access_token", {"value": "at-123"}) == "[REDACTED]"


def test_jwt_and_bearer_values_in_free_text_are_replaced_by_fingerprints() -> None:
    text = f"upstream returned {JWT} for Authorization: Bearer {BEARER_TOKEN} (retrying)"

    scrubbed = redact_value("detail", text)

    assert JWT not in scrubbed
    assert BEARER_TOKEN not in scrubbed
    assert masked(JWT) in scrubbed
    assert f"Bearer {masked(BEARER_TOKEN)}" in scrubbed
    assert scrubbed.endswith("(retrying)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login failed password=hunter2 for bob", "login failed password=[REDACTED] for bob"),
        ("client_secret: s3cr3t&x=1", "client_secret: [REDACTED]&x=1"),
        ("GET /cb?code=ac-123&state=xyz", f"GET /cb?code={masked('ac-123')}&state=xyz"),
        ("refresh_token=rt-1; retrying", f"refresh_token={masked('rt-1')}; retrying"),
        ("status_code=500 token_type=Bearer", "status_code=500 token_type=Bearer"),
    ],
)
def test_key_value_credentials_in_free_text_are_masked(text: str, expected: str) -> None:
    assert redact_value("detail", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "TypeError: login() got password='hunter2-hunter2'",
        'body={"client_secret": "hunter2-hunter2"}',
        "x_api_key=hunter2-hunter2",
    ],
    ids=["python-repr", "json", "compound-key"],
)
def test_quoted_or_compound_key_value_credentials_in_free_text_are_masked(text: str) -> None:
    # Exception messages quote values (repr) and request bodies are JSON; both are free text.
    assert "hunter2-hunter2" not in redact_value("detail", text)


def test_nested_dicts_and_lists_are_redacted_by_key_and_scrubbed_as_text() -> None:
    value: dict[str, Any] = {
        "headers": {"Authorization": f"Bearer {BEARER_TOKEN}", "Cookie": "echo_session=abc"},
        "attempts": [{"refresh_token": "rt-1", "status_code": "400"}, f"saw {JWT}"],
        "user": "alice",
    }

    redacted = redact_value("request", value)

    assert redacted == {
        "headers": {"Authorization": masked(BEARER_TOKEN), "Cookie": "[REDACTED]"},
        "attempts": [{"refresh_token": masked("rt-1"), "status_code": "400"}, f"saw {masked(JWT)}"],
        "user": "alice",
    }


def test_redact_event_redacts_every_key_and_scrubs_the_event_text() -> None:
    event = {
        "event": f"login with {JWT}",
        "password": "hunter2-hunter2",
        "code": "ac-123",
        "status_code": "200",
        "user_sub": "b0b",
    }

    redacted = redact_event(None, "info", event)

    assert redacted == {
        "event": f"login with {masked(JWT)}",
        "password": "[REDACTED]",
        "code": masked("ac-123"),
        "status_code": "200",
        "user_sub": "b0b",
    }


@pytest.mark.parametrize("kind", list(SecretKind))
def test_echo_secrets_anywhere_in_free_text_become_their_fingerprint(kind: SecretKind) -> None:
    # No key, no "Bearer", no "=": only the secret's own prefix and checksum give it away.
    secret = mint(kind)
    text = f"refresh failed for {secret} (glued:x{secret}y) retrying"

    scrubbed = scrub_text(text)

    assert secret not in scrubbed
    assert scrubbed == (f"refresh failed for {masked(secret)} (glued:x{masked(secret)}y) retrying")


def test_echo_secret_fingerprint_matches_the_one_audit_events_record() -> None:
    # Under a token key, after "Bearer", after "code=" or bare: always the bare secret's print.
    secret = mint(SecretKind.REFRESH_TOKEN)

    assert redact_value("refresh_token", secret) == masked(secret)
    assert (
        scrub_text(f"Authorization: Bearer {secret}") == f"Authorization: Bearer {masked(secret)}"
    )
    assert scrub_text(f"/cb?code={secret}&state=x") == f"/cb?code={masked(secret)}&state=x"
    assert scrub_text(f"client_secret: {secret}") == f"client_secret: {masked(secret)}"


def test_echo_secrets_in_nested_values_and_in_keys_are_masked() -> None:
    secret, session_id = mint(SecretKind.CLIENT_SECRET), mint(SecretKind.SESSION_ID)
    value = {"note": f"client used {secret}", "cache": {session_id: "hit"}, "ids": [session_id]}

    redacted = redact_value("fields", value)

    assert redacted == {
        "note": f"client used {masked(secret)}",
        "cache": {masked(session_id): "hit"},
        "ids": [masked(session_id)],
    }


def test_look_alike_with_a_wrong_checksum_is_left_readable() -> None:
    secret = mint(SecretKind.AUTHORIZATION_CODE)
    look_alike = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    text = f"docs say codes look like echo_ac_… e.g. {look_alike}"

    assert scrub_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "login failed for bob with password hunter2",
            "login failed for bob with password [REDACTED]",
        ),
        (
            "Signed in using the passphrase c0rrect-h0rse!",
            "Signed in using the passphrase [REDACTED]",
        ),
        ("retry WITH PASSWD s3cr3t, then give up", "retry WITH PASSWD [REDACTED] then give up"),
    ],
)
def test_password_after_with_password_in_prose_is_redacted(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "password is incorrect for bob",
        "password changed for bob",
        "bob reset his password yesterday",
        "password: [REDACTED] with password [REDACTED]",
    ],
)
def test_prose_about_passwords_without_a_value_stays_readable(text: str) -> None:
    assert scrub_text(text) == text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging: structlog defaults, root handlers and levels."""
    root = logging.getLogger()
    alembic = logging.getLogger("alembic")
    handlers, root_level, alembic_level = root.handlers[:], root.level, alembic.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(root_level)
    alembic.setLevel(alembic_level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_from_structlog_and_stdlib_carry_fingerprints_not_credentials(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")  # binds the handler to the sys.stderr capsys installed
    upstream_token = "up-4fJq8sWn2LxY"
    client_secret = mint(SecretKind.CLIENT_SECRET)

    get_logger("echo_identity.test").info(
        "token issued", access_token=JWT, password="hunter2-hunter2", status_code=200
    )
    logging.getLogger("x").info("provider answered Authorization: Bearer %s", upstream_token)
    logging.getLogger("x").info("client %s rejected", client_secret)
    try:
        raise ValueError(f"refresh refused for Bearer {BEARER_TOKEN}")
    except ValueError:
        logging.getLogger("x").exception("refresh failed")

    err = capsys.readouterr().err
    for secret in (JWT, "hunter2-hunter2", upstream_token, BEARER_TOKEN, client_secret):
        assert secret not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["logger"] for line in lines] == ["echo_identity.test", "x", "x", "x"]
    issued, answered, rejected, failed = lines
    assert rejected["event"] == f"client {masked(client_secret)} rejected"
    assert issued["event"] == "token issued"
    assert issued["access_token"] == masked(JWT)
    assert issued["password"] == "[REDACTED]"
    assert issued["status_code"] == 200
    assert issued["level"] == "info"
    assert answered["event"] == f"provider answered Authorization: Bearer {masked(upstream_token)}"
    assert masked(BEARER_TOKEN) in failed["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_configured_level_drops_lower_records(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "json")

    get_logger("echo_identity.test").info("quiet")
    logging.getLogger("x").info("quiet too")
    get_logger("echo_identity.test").warning("loud")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["loud"]


# The pre-check of scrub_text must never let through what the patterns would mask.
_FRAGMENTS = [
    "echo_",
    "eyJ",
    "eyJhbGciOiJFUzI1NiJ9.",
    JWT,
    "Bearer ",
    "basic\t",
    "BEARER",
    "password",
    "Passwd",
    "passphrase ",
    "secret",
    "client_secret",
    "token",
    "api_key",
    "apiKey",
    "code",
    "=",
    ":",
    " ",
    "'",
    '"',
    "with ",
    "using the ",
    "\u212a",  # KELVIN SIGN: "k" to a case-insensitive pattern
    "\u017f",  # LATIN SMALL LETTER LONG S: "s" likewise
    "abcDEF123456",
    ".",
    "-",
    "_",
    "&",
    "\n",
]


@given(
    st.lists(
        st.sampled_from([*_FRAGMENTS, mint(SecretKind.REFRESH_TOKEN)]) | st.text(max_size=4),
        max_size=12,
    ).map("".join)
)
@examples(max_examples=400, deadline=None)
def test_scrub_pre_check_never_changes_what_is_masked(text: str) -> None:
    assert scrub_text(text) == _scrub_patterns(text)


def test_text_without_any_trigger_is_returned_as_is() -> None:
    for text in ("POST", "/token", "127.0.0.1", "request", "/api/v1/users/b0b/connections"):
        assert scrub_text(text) is text


# Levels are checked first; the chain is built once and follows a new configuration.


@pytest.mark.usefixtures("restore_logging")
def test_a_line_below_the_level_runs_no_processor(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    seen: list[str] = []

    def spy(_logger: Any, method: str, event_dict: Any) -> Any:
        seen.append(method)
        return event_dict

    structlog.get_config()["processors"].insert(0, spy)  # ahead of every processor
    log = get_logger("echo_identity.test_levels")

    log.debug("quiet", payload={"access_token": JWT})
    log.info("loud")

    assert seen == ["info"]
    assert [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()] == ["loud"]


@pytest.mark.usefixtures("restore_logging")
def test_a_logger_used_before_a_new_configuration_follows_its_level_and_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    log = get_logger("echo_identity.test_reconfigured")
    log.info("first", access_token=JWT)  # bound (and cached) under the first configuration

    configure_logging("WARNING", "console")
    log.info("dropped")
    log.warning("second", access_token=JWT)

    first, second = capsys.readouterr().err.splitlines()
    assert json.loads(first)["event"] == "first"
    assert "dropped" not in second
    assert re.fullmatch(
        r"\S+Z \[warning  \] second +access_token=sha256:[0-9a-f]{12} "
        r"logger=echo_identity\.test_reconfigured",
        second,
    )


@pytest.mark.usefixtures("restore_logging")
def test_console_lines_are_redacted_and_a_value_cannot_forge_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "console")

    get_logger("echo_identity.test_console").info(
        "request", path="/x\n2026-01-01T00:00:00Z [info] forged", password="hunter2-hunter2"
    )
    logging.getLogger("x").warning("provider answered Authorization: Bearer %s", BEARER_TOKEN)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "path='/x\\n2026-01-01T00:00:00Z [info] forged'" in lines[0]
    assert "password=[REDACTED]" in lines[0]
    assert "hunter2" not in lines[0]
    assert f"Bearer {masked(BEARER_TOKEN)}" in lines[1]
    assert BEARER_TOKEN not in lines[1]


@pytest.mark.usefixtures("restore_logging")
def test_timestamps_are_utc_iso_with_microseconds(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    before = datetime.now(UTC)

    get_logger("echo_identity.test_time").info("tick")
    logging.getLogger("x").info("tock")

    after = datetime.now(UTC)
    for line in capsys.readouterr().err.splitlines():
        stamp = json.loads(line)["timestamp"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
        assert before - timedelta(seconds=1) <= datetime.fromisoformat(stamp) <= after


@pytest.mark.usefixtures("restore_logging")
def test_the_access_line_masks_secrets_in_the_path(
    capsys: pytest.CaptureFixture[str], settings: Settings, database: Database
) -> None:
    configure_logging("INFO", "json")
    client = create_app(settings, database).test_client()
    secret = mint(SecretKind.REFRESH_TOKEN)

    client.get(f"/api/v1/users/{secret}/connections")
    client.get(f"/{JWT}", headers={"X-Request-ID": "code:ac-0123456789"})

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    access = [line for line in lines if line["event"] == "request"]
    assert [line["path"] for line in access] == [
        f"/api/v1/users/{masked(secret)}/connections",
        f"/{masked(JWT)}",
    ]
    assert access[1]["request_id"] == f"code:{masked('ac-0123456789')}"
    assert access[0]["status"] == 401
    err = json.dumps(lines)
    assert secret not in err
    assert JWT not in err
