"""Each app has a limiter of its own: two apps in one process share no counter or storage."""

from __future__ import annotations

from pathlib import Path

from echo_identity.app import create_app
from echo_identity.db import Database
from tests.support.environment import app_environment, settings_for


def test_two_apps_in_one_process_count_their_own_requests(
    tmp_path: Path, database: Database
) -> None:
    """Two deployments (each its own settings: with Redis, its own key prefix) in one process."""
    first, second = (
        create_app(
            settings_for(
                app_environment(
                    tmp_path / name, str(database.engine.url), ECHO_API_RATE_LIMIT="2/minute"
                )
            ),
            database,
        ).test_client()
        for name in ("first", "second")
    )

    statuses = [first.get("/api/v1/audit/events").status_code for _ in range(3)]
    assert statuses == [401, 401, 429]  # the limit holds in the first app...
    assert second.get("/api/v1/audit/events").status_code == 401  # ...and only there
