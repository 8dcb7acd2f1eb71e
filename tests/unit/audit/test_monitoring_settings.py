"""Monitoring settings are checked at start-up, naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo_identity.config import ConfigError, load_settings
from tests.support.environment import app_environment


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"ECHO_BUSINESS_HOURS": "9 to 5"}, "ECHO_BUSINESS_HOURS"),
        (
            {"ECHO_BUSINESS_HOURS": "09:00-17:00", "ECHO_BUSINESS_TIMEZONE": "Nowhere/Land"},
            "ECHO_BUSINESS_HOURS",
        ),
        ({"ECHO_ALERT_WEBHOOK_URL": "https://soc.example/hook"}, "ECHO_ALERT_WEBHOOK_SECRET"),
        (
            {"ECHO_ALERT_WEBHOOK_URL": "ftp://soc.example", "ECHO_ALERT_WEBHOOK_SECRET": "x" * 40},
            "ECHO_ALERT_WEBHOOK_URL",
        ),
        ({"ECHO_ALERT_SYSLOG_ADDRESS": "syslog.example:514"}, "ECHO_ALERT_SYSLOG_ADDRESS"),
    ],
)
def test_bad_monitoring_settings_name_the_variable(
    tmp_path: Path, extra: dict[str, str], variable: str
) -> None:
    env = app_environment(tmp_path / "var", f"sqlite:///{tmp_path}/x.db", **extra)
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == variable


def test_log_audience_defaults_to_the_issuer_log_url(tmp_path: Path) -> None:
    env = app_environment(
        tmp_path / "var", f"sqlite:///{tmp_path}/x.db", ECHO_ISSUER="http://127.0.0.1:8000/"
    )
    settings, _ = load_settings(env)
    assert settings.effective_log_audience == "http://127.0.0.1:8000/log"
    custom, _ = load_settings({**env, "ECHO_LOG_AUDIENCE": "urn:echo:logs"})
    assert custom.effective_log_audience == "urn:echo:logs"
