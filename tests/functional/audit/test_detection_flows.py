"""Detection through the real app: bad sign-ins at /login raise a delivered alert."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from echo_identity.audit.alert_models import Alert, AlertDelivery
from echo_identity.audit.detection import SETTLE
from echo_identity.db import Database
from echo_identity.worker import build_worker, run_pass
from tests.factories import create_user
from tests.functional.audit.test_alerts_delivery import SECRET, Receiver, start_receiver
from tests.support.browser import Browser
from tests.support.clock import MovableClock
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, settings_for
from tests.support.server import LiveServer, free_port, run_cli, start_server


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Receiver]]:
    """A development server alerting a webhook; its worker passes run when a test says so
    (``worker --once``), never on a timer."""
    tmp_path = tmp_path_factory.mktemp("watched")
    port = free_port()
    receiver = Receiver(mode="ok")
    hook = start_receiver(port, receiver)
    with fresh_database_url(tmp_path) as url:
        env = app_environment(
            tmp_path / "var",
            url,
            ECHO_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
            ECHO_ALERT_WEBHOOK_SECRET=SECRET,
        )
        server = start_server(env, tmp_path / "server.log")
        try:
            yield server, receiver
        finally:
            server.stop()
            hook.shutdown()
            hook.server_close()


def wait_for(condition: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def worker_passes(server: LiveServer, count: int) -> None:
    """``count`` worker passes, as ``echo-identity worker`` runs them, at a time past the
    moment detection lets recent events settle on PostgreSQL (the clock moves; nobody waits)."""
    clock = MovableClock()
    clock.advance(SETTLE.total_seconds() + 1)
    worker = build_worker(settings_for(server.env), clock=clock)
    try:
        for _ in range(count):
            run_pass(worker)
    finally:
        worker.database.dispose()


def test_repeated_bad_logins_raise_one_alert_delivered_to_the_webhook(
    watched: tuple[LiveServer, Receiver],
) -> None:
    server, receiver = watched
    user = create_user(settings_for(server.env).database_url)
    wrong = "Wr0ng-" + "p4ss" * 4
    browser = Browser(server)
    for _ in range(6):
        assert browser.login(user.username, wrong).status_code == 401
    worker_passes(server, 2)  # several passes over the same failures

    wait_for(lambda: any(d["rule"] == "login_failures" for d in receiver.received))
    [alert] = [d for d in receiver.received if d["rule"] == "login_failures"]
    assert alert["severity"] == "warning"
    assert len(alert["evidence_event_ids"]) >= 5
    assert receiver.bad_signatures == 0

    database = Database(settings_for(server.env).database_url)
    try:
        with database.session() as session:
            alerts = list(session.scalars(select(Alert).where(Alert.rule == "login_failures")))
            assert len(alerts) == 1  # six failures, several passes: still one alert
            deliveries = list(session.scalars(select(AlertDelivery)))
            assert {(d.channel, d.status) for d in deliveries} == {("webhook", "delivered")}
            stored = json.dumps([(a.summary, a.key, a.evidence) for a in alerts])
    finally:
        database.dispose()
    # The typed password never reaches an alert, its delivery or the export.
    assert wrong not in stored
    assert wrong not in json.dumps(receiver.received)

    out = server.log_path.parent / "events.ocsf.jsonl"
    result = run_cli(
        server.env, "audit", "export", "--since", "1h", "--format", "ocsf", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    documents = [json.loads(line) for line in out.read_text().splitlines()]
    failures = [d for d in documents if d["class_uid"] == 3002 and d["status_id"] == 2]
    assert len(failures) >= 6
    assert all(d["type_uid"] == 300201 for d in failures)
    assert wrong not in out.read_text()

    listed = run_cli(server.env, "audit", "alerts", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["rule"] for a in json.loads(listed.stdout)["alerts"]] == ["login_failures"]


def test_normal_sign_ins_raise_no_alert(watched: tuple[LiveServer, Receiver]) -> None:
    server, receiver = watched
    run_cli(server.env, "worker", "--once")
    alerts_before = json.loads(run_cli(server.env, "audit", "alerts", "--json").stdout)["alerts"]
    received_before = len(receiver.received)
    user = create_user(settings_for(server.env).database_url)
    for attempt in range(3):
        browser = Browser(server)
        if attempt == 0:
            browser.login(user.username, "typo-" + user.password)  # one typo is normal
        assert browser.login(user.username, user.password).status_code == 302
    worker_passes(server, 2)  # and a second pass after the traffic
    alerts_after = json.loads(run_cli(server.env, "audit", "alerts", "--json").stdout)["alerts"]
    assert alerts_after == alerts_before
    assert len(receiver.received) == received_before
