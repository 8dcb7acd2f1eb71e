"""The IP in audit events honours only the configured trusted proxy hops.

Without a trusted proxy (``ECHO_TRUSTED_PROXY_HOPS=0``) an ``X-Forwarded-For`` header is the
client's own claim and is ignored; behind one trusted proxy, the address that proxy appended
(the last one) is the client, and anything the client put before it is ignored.
"""

from __future__ import annotations

import secrets

import httpx
from sqlalchemy import select

from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from tests.support.browser import PROXY_HOST
from tests.support.oidc import service_client
from tests.support.server import LiveServer


def _failed_token_request_ip(server: LiveServer, headers: dict[str, str]) -> str | None:
    """Send a token request with a wrong secret for a fresh client and return the IP its audit
    event holds (a fresh client: the first refusal of its aggregation window is an event)."""
    client = service_client(server)
    request_id = "probe-" + secrets.token_hex(8)
    response = httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, "wrong"),
        headers={**headers, "X-Request-ID": request_id},
    )
    assert response.status_code == 401, response.text
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            [event] = session.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id))
            assert event.client_id == client.client_id
            return event.ip
    finally:
        database.dispose()


def test_without_a_trusted_proxy_a_forwarded_for_header_is_ignored(dev_server: LiveServer) -> None:
    ip = _failed_token_request_ip(dev_server, {"X-Forwarded-For": "203.0.113.77"})
    assert ip == "127.0.0.1"


def test_behind_one_trusted_proxy_the_address_it_appended_is_recorded(
    prod_server: LiveServer,
) -> None:
    behind_proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": PROXY_HOST}
    single = _failed_token_request_ip(
        prod_server, {**behind_proxy, "X-Forwarded-For": "198.51.100.23"}
    )
    assert single == "198.51.100.23"
    # The client claimed 203.0.113.1; the proxy appended the address it really saw.
    spoofed = _failed_token_request_ip(
        prod_server, {**behind_proxy, "X-Forwarded-For": "203.0.113.1, 198.51.100.24"}
    )
    assert spoofed == "198.51.100.24"
