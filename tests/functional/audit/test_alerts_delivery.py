"""Alert delivery to real receivers: a webhook that is down then back, SMTP, and syslog."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from echo_identity.audit.alert_models import Alert, AlertDelivery
from echo_identity.audit.alerts import raise_alert
from echo_identity.audit.delivery import Delivery, backoff, deliver_due
from echo_identity.audit.rules import Finding
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from tests.support.environment import app_environment, settings_for
from tests.support.server import free_port

SECRET = "whsec-" + "k3y" * 12
SYSLOG_LINE = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|\[[^ ]+(?: [^ =\]]+=\"(?:[^\"\\\]]|\\.)*\")*\]) (?P<msg>.*)$"
)


def settings_with(tmp_path: Path, database_url: str, **env: str) -> Settings:
    return settings_for(
        app_environment(
            tmp_path / "var",
            database_url,
            ECHO_ALERT_RETRY_BASE="10",
            ECHO_ALERT_RETRY_MAX="60",
            **env,
        )
    )


def raise_alerts(
    database: Database, settings: Settings, count: int, channels: list[str]
) -> list[int]:
    ids = []
    with database.transaction() as session:
        for i in range(count):
            alert = raise_alert(
                session,
                Finding(
                    "login_failures",
                    "warning",
                    f"account:u_{i}",
                    f"5 failed sign-ins for u_{i}",
                    (i + 1,),
                ),
                now=utcnow(),
                dedup_window=timedelta(seconds=settings.alert_dedup_window),
                channels=channels,
            )
            assert alert is not None
            ids.append(alert.id)
    return ids


@dataclass
class Receiver:
    """A real HTTP webhook receiver whose availability the test switches."""

    mode: str = "503"  # "503" or "ok"
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    bad_signatures: int = 0


def start_receiver(port: int, receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            document = json.loads(body)
            if not hmac.compare_digest(expected, self.headers.get("X-Echo-Signature", "")) or str(
                document["sent_at"]
            ) != self.headers.get("X-Echo-Timestamp"):
                receiver.bad_signatures += 1
                self.send_response(401)
            elif receiver.mode == "503":
                receiver.refused += 1
                self.send_response(503)
            else:
                receiver.received.append(document)
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def due_rows(database: Database) -> list[AlertDelivery]:
    with database.session() as session:
        return list(session.scalars(select(AlertDelivery).order_by(AlertDelivery.id)))


def test_webhook_down_then_back_receives_every_alert_exactly_once(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    port = free_port()
    settings = settings_with(
        tmp_path,
        database_url,
        ECHO_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{port}/hooks/echo",
        ECHO_ALERT_WEBHOOK_SECRET=SECRET,
        ECHO_ALERT_DELIVERY_TIMEOUT="2",
    )
    alert_ids = raise_alerts(database, settings, 3, ["webhook"])
    now = utcnow()

    # Down: nothing listens on the port.
    result = deliver_due(database, Delivery.from_settings(settings), now=now)
    assert (result.delivered, result.failed) == (0, 3)
    rows = due_rows(database)
    assert {r.status for r in rows} == {"failed"}
    assert all(r.last_error and "unreachable" in r.last_error for r in rows)
    assert all(r.next_attempt_at >= now + timedelta(seconds=10) for r in rows)
    # Back-off: a pass before the next attempt is due sends nothing.
    assert (
        deliver_due(
            database, Delivery.from_settings(settings), now=now + timedelta(seconds=5)
        ).failed
        == 0
    )

    receiver = Receiver(mode="503")
    server = start_receiver(port, receiver)
    try:
        # Up but failing (503): still not delivered, attempts counted, wait doubles.
        now += timedelta(seconds=11)
        assert deliver_due(database, Delivery.from_settings(settings), now=now).failed == 3
        assert receiver.refused == 3
        rows = due_rows(database)
        assert {r.attempts for r in rows} == {2}
        assert all(r.next_attempt_at >= now + timedelta(seconds=20) for r in rows)

        receiver.mode = "ok"
        now += timedelta(seconds=21)
        assert deliver_due(database, Delivery.from_settings(settings), now=now).delivered == 3
        # Later passes deliver nothing again.
        assert (
            deliver_due(
                database, Delivery.from_settings(settings), now=now + timedelta(hours=2)
            ).delivered
            == 0
        )
    finally:
        server.shutdown()
        server.server_close()

    assert receiver.bad_signatures == 0
    assert sorted(d["alert_id"] for d in receiver.received) == sorted(alert_ids)
    assert {d["rule"] for d in receiver.received} == {"login_failures"}
    assert {r.status for r in due_rows(database)} == {"delivered"}


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 30, 3600).total_seconds() for n in (1, 2, 3, 8, 50)] == [
        30,
        60,
        120,
        3600,
        3600,
    ]


def test_repeat_within_the_dedup_window_updates_the_alert_and_delivers_nothing_new(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = settings_with(tmp_path, database_url)
    finding = Finding("refresh_token_reuse", "high", "family:f1", "reuse", (1,))
    again = Finding("refresh_token_reuse", "high", "family:f1", "reuse", (9,))
    now = utcnow()
    with database.transaction() as session:
        first = raise_alert(
            session, finding, now=now, dedup_window=timedelta(hours=1), channels=["webhook"]
        )
        second = raise_alert(
            session,
            again,
            now=now + timedelta(minutes=5),
            dedup_window=timedelta(hours=1),
            channels=["webhook"],
        )
        later = raise_alert(
            session,
            again,
            now=now + timedelta(hours=2),
            dedup_window=timedelta(hours=1),
            channels=["webhook"],
        )
    assert first is not None
    assert second is None
    assert later is not None
    with database.session() as session:
        alerts = list(session.scalars(select(Alert).order_by(Alert.id)))
        assert [(a.occurrences, a.evidence) for a in alerts] == [(2, [1, 9]), (1, [9])]
        assert len(list(session.scalars(select(AlertDelivery)))) == 2
    assert settings.alert_dedup_window == 3600


class Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Collector]]:
    collector = Collector()
    port = free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, collector
    finally:
        controller.stop()


def test_email_channel_sends_one_message_per_alert_through_a_real_smtp_server(
    tmp_path: Path, database_url: str, database: Database, smtp_server: tuple[int, Collector]
) -> None:
    port, collector = smtp_server
    settings = settings_with(
        tmp_path,
        database_url,
        ECHO_ALERT_SMTP_HOST="127.0.0.1",
        ECHO_ALERT_SMTP_PORT=str(port),
        ECHO_ALERT_SMTP_STARTTLS="false",
        ECHO_ALERT_SMTP_FROM="alerts@id.example.test",
        ECHO_ALERT_SMTP_TO="soc@example.test, oncall@example.test",
    )
    [alert_id] = raise_alerts(database, settings, 1, ["email"])
    assert deliver_due(database, Delivery.from_settings(settings)).delivered == 1
    [(sender, recipients, content)] = collector.messages
    assert sender == "alerts@id.example.test"
    assert recipients == ["soc@example.test", "oncall@example.test"]
    text = content.decode()
    assert f"X-Echo-Alert-Id: {alert_id}" in text
    assert "WARNING alert: login_failures" in text
    assert "5 failed sign-ins for u_0" in text


def test_email_to_a_closed_port_fails_and_stays_due(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = settings_with(
        tmp_path,
        database_url,
        ECHO_ALERT_SMTP_HOST="127.0.0.1",
        ECHO_ALERT_SMTP_PORT=str(free_port()),
        ECHO_ALERT_SMTP_TO="soc@example.test",
        ECHO_ALERT_DELIVERY_TIMEOUT="2",
    )
    raise_alerts(database, settings, 1, ["email"])
    assert deliver_due(database, Delivery.from_settings(settings)).failed == 1
    [row] = due_rows(database)
    assert (row.status, row.attempts) == ("failed", 1)


def test_syslog_udp_receives_a_parseable_rfc5424_line(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        settings = settings_with(
            tmp_path, database_url, ECHO_ALERT_SYSLOG_ADDRESS=f"udp://127.0.0.1:{port}"
        )
        with database.transaction() as session:
            alert = raise_alert(
                session,
                Finding(
                    "password_spraying",
                    "high",
                    'ip:192.0.2.1"]x',
                    "IP 192.0.2.1 failed 10 accounts",
                    (4,),
                ),
                now=utcnow(),
                dedup_window=timedelta(hours=1),
                channels=["syslog"],
            )
            assert alert is not None
        assert deliver_due(database, Delivery.from_settings(settings)).delivered == 1
        data, _ = listener.recvfrom(65535)
    line = data.decode()
    match = SYSLOG_LINE.match(line)
    assert match, line
    assert int(match["pri"]) == 13 * 8 + 2  # log audit, critical
    assert (match["app"], match["msgid"]) == ("echo-identity", "alert")
    assert match["ts"].endswith("Z")
    assert 'rule="password_spraying"' in match["sd"]
    assert 'key="ip:192.0.2.1\\"\\]x"' in match["sd"]  # escaped per RFC 5424 §6.3.3
    assert match["msg"] == "IP 192.0.2.1 failed 10 accounts"


def test_syslog_tcp_uses_octet_counting(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    frames: list[bytes] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            buffer = b""
            while chunk := self.request.recv(4096):
                buffer += chunk
            frames.append(buffer)

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        settings = settings_with(
            tmp_path, database_url, ECHO_ALERT_SYSLOG_ADDRESS=f"tcp://127.0.0.1:{port}"
        )
        raise_alerts(database, settings, 1, ["syslog"])
        assert deliver_due(database, Delivery.from_settings(settings)).delivered == 1
        deadline = 50
        while not frames and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
    finally:
        server.shutdown()
        server.server_close()
    [frame] = frames
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    assert SYSLOG_LINE.match(message.decode())
