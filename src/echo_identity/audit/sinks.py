"""Alert channels: a signed JSON webhook, e-mail over SMTP, and syslog (RFC 5424).

Each sink's ``send(payload)`` delivers one alert document or raises :class:`DeliveryError`
with a short reason (never a secret or a response body); the delivery loop records the reason
and retries later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import socket
import ssl
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from echo_identity import __version__
from echo_identity.config import Settings

SIGNATURE_HEADER = "X-Echo-Signature"
TIMESTAMP_HEADER = "X-Echo-Timestamp"
SYSLOG_ENTERPRISE_ID = "32473"  # the RFC 5612 documentation enterprise number
SYSLOG_FACILITY = 13  # "log audit" (RFC 5424 §6.2.1)
_SYSLOG_SEVERITY = {"high": 2, "warning": 4, "info": 6}  # critical, warning, informational


class DeliveryError(Exception):
    """A channel did not accept the alert; ``str()`` is a short, secret-free reason."""


class AlertSink(Protocol):
    channel: str

    def send(self, payload: dict[str, Any]) -> None: ...


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Echo-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs the alert as JSON; the body carries ``sent_at`` equal to the timestamp header,
    so the HMAC over the exact body also protects the timestamp (replay window check)."""

    channel = "webhook"

    def __init__(self, url: str, secret: bytes, timeout: float) -> None:
        self._url = url
        self._secret = secret
        self._timeout = timeout

    def send(self, payload: dict[str, Any]) -> None:
        sent_at = int(time.time())
        body = json.dumps({**payload, "sent_at": sent_at}, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"echo-identity/{__version__}",
            TIMESTAMP_HEADER: str(sent_at),
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        try:
            response = httpx.post(self._url, content=body, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook answered HTTP {response.status_code}")


class EmailSink:
    """Sends a plain-text e-mail per alert (STARTTLS unless disabled)."""

    channel = "email"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def message(self, payload: dict[str, Any]) -> EmailMessage:
        s = self._settings
        message = EmailMessage()
        message["Subject"] = (
            f"[Echo Identity] {payload['severity'].upper()} alert: {payload['rule']}"
        )
        message["From"] = s.alert_smtp_from
        message["To"] = ", ".join(_recipients(s))
        message["X-Echo-Alert-Id"] = str(payload["alert_id"])
        lines = [str(payload["summary"]), ""]
        lines += [f"{key}: {value}" for key, value in payload.items() if key != "summary"]
        message.set_content("\n".join(lines))
        return message

    def send(self, payload: dict[str, Any]) -> None:
        s = self._settings
        try:
            with smtplib.SMTP(
                s.alert_smtp_host or "", s.alert_smtp_port, timeout=s.alert_delivery_timeout
            ) as smtp:
                if s.alert_smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if s.alert_smtp_username and s.alert_smtp_password:
                    smtp.login(s.alert_smtp_username, s.alert_smtp_password.get_secret_value())
                smtp.send_message(self.message(payload))
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"smtp failed: {type(exc).__name__}") from None


def _recipients(settings: Settings) -> list[str]:
    return [a.strip() for a in settings.alert_smtp_to.split(",") if a.strip()]


def _sd_escape(value: str) -> str:
    """RFC 5424 §6.3.3: escape ``"``, ``\\`` and ``]`` in SD-PARAM values."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_line(payload: dict[str, Any], hostname: str, now: datetime | None = None) -> str:
    """The RFC 5424 message for an alert (no framing)."""
    when = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    pri = SYSLOG_FACILITY * 8 + _SYSLOG_SEVERITY.get(str(payload["severity"]), 5)
    params = " ".join(
        f'{name}="{_sd_escape(str(payload[name]))}"'
        for name in ("alert_id", "rule", "severity", "key")
    )
    structured = f"[echo-alert@{SYSLOG_ENTERPRISE_ID} {params}]"
    host = (hostname or "-")[:255].replace(" ", "_")
    stamp = when.replace("+00:00", "Z")
    return f"<{pri}>1 {stamp} {host} echo-identity - alert {structured} {payload['summary']}"


class SyslogSink:
    """RFC 5424 over UDP (one datagram) or TCP (RFC 6587 octet counting)."""

    channel = "syslog"

    def __init__(self, address: str, timeout: float) -> None:
        parts = urlsplit(address)
        if parts.scheme not in {"udp", "tcp"} or not parts.hostname:
            raise ValueError("ECHO_ALERT_SYSLOG_ADDRESS must be udp://host:port or tcp://host:port")
        self._scheme = parts.scheme
        self._target = (parts.hostname, parts.port or (514 if parts.scheme == "udp" else 601))
        self._timeout = timeout

    def send(self, payload: dict[str, Any]) -> None:
        data = syslog_line(payload, socket.gethostname()).encode()
        try:
            if self._scheme == "udp":
                with socket.socket(_family(self._target[0]), socket.SOCK_DGRAM) as sock:
                    sock.sendto(data, self._target)
            else:
                with socket.create_connection(self._target, timeout=self._timeout) as sock:
                    sock.sendall(str(len(data)).encode() + b" " + data)
        except OSError as exc:
            raise DeliveryError(f"syslog failed: {type(exc).__name__}") from None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def sinks_from_settings(settings: Settings) -> dict[str, AlertSink]:
    """One sink per configured channel, keyed by channel name."""
    sinks: dict[str, AlertSink] = {}
    timeout = settings.alert_delivery_timeout
    if settings.alert_webhook_url:
        secret = settings.alert_webhook_secret
        sinks["webhook"] = WebhookSink(
            settings.alert_webhook_url,
            secret.get_secret_value().encode() if secret else b"",
            timeout,
        )
    if settings.alert_smtp_host and settings.alert_smtp_to:
        sinks["email"] = EmailSink(settings)
    if settings.alert_syslog_address:
        sinks["syslog"] = SyslogSink(settings.alert_syslog_address, timeout)
    return sinks
