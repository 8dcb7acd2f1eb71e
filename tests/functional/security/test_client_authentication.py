"""RFC 6749 §2.3/§3.2 at every client-authenticated endpoint, and RFC 7009 §2.2 at /revoke.

Issue 10, findings 8 and 9: one client authentication method per request, each parameter once
and only in the POST body, malformed Basic credentials refused as ``invalid_client`` (never a
500), and /revoke giving away nothing about a token that is not the caller's.

The /token refusals run on the production server, each test from its own client address
(``X-Forwarded-For`` through the one trusted proxy hop): every refusal spends the failure rate
limit of its address, and the shared development server must keep its budget for other tests.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from tests.factories import create_user
from tests.support.browser import PROXY_HOST, Browser
from tests.support.oidc import (
    RegisteredClient,
    RelyingParty,
    client_credentials_token,
    service_client,
    web_client,
)
from tests.support.server import LiveServer

ENDPOINTS = ("/token", "/revoke", "/introspect", "/verify")
# Bytes no client sends in good faith as Basic credentials (the value after "Basic ").
MALFORMED_BASIC = {
    "not base64": "%%%not-base64%%%",
    "no colon": base64.b64encode(b"just-a-client-id").decode(),
    "invalid UTF-8": base64.b64encode(b"\xff\xfe:\xc3\x28").decode(),
    "NUL in the id": base64.b64encode(b"client\x00id:secret").decode(),
    "percent-encoded NUL": base64.b64encode(b"client%00id:secret").decode(),
    "percent-encoded invalid UTF-8": base64.b64encode(b"client%FFid:secret").decode(),
    "empty client id": base64.b64encode(b":secret").decode(),
}


class Caller:
    """Requests to the production server from one client address of its own."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.ip = (
            f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
        )

    def post(
        self,
        path: str,
        content: bytes | str = b"",
        *,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> httpx.Response:
        sent = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": PROXY_HOST,
            "X-Forwarded-For": self.ip,
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Request-ID": request_id or secrets.token_hex(12),
        }
        if auth is not None:
            sent["Authorization"] = _basic(*auth)
        sent.update(headers or {})
        return httpx.post(self.server.base_url + path, content=content, headers=sent, timeout=10)


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _form(**fields: str) -> str:
    return str(httpx.QueryParams(fields))


@pytest.fixture
def database(prod_server: LiveServer) -> Iterator[Database]:
    db = Database(prod_server.env["ECHO_DATABASE_URL"])
    yield db
    db.dispose()


@pytest.fixture
def caller(prod_server: LiveServer) -> Caller:
    return Caller(prod_server)


@pytest.fixture
def service_a(prod_server: LiveServer) -> RegisteredClient:
    return service_client(prod_server)


@pytest.fixture
def service_b(prod_server: LiveServer) -> RegisteredClient:
    return service_client(prod_server)


def _secret(client: RegisteredClient) -> str:
    assert client.client_secret is not None
    return client.client_secret


def _token_failures(database: Database, request_id: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.event_type == "oauth.token.failed",
                    AuditEvent.request_id == request_id,
                )
            )
        )


def _refused_and_audited(
    caller: Caller, database: Database, content: str, auth: tuple[str, str]
) -> httpx.Response:
    """POST ``content`` to /token: a 400 ``invalid_request``, no token, one failure event."""
    request_id = secrets.token_hex(12)
    response = caller.post("/token", content, auth=auth, request_id=request_id)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "access_token" not in response.text
    events = _token_failures(database, request_id)
    assert [(e.outcome, e.details["error"]) for e in events] == [("failure", "invalid_request")]
    return response


# -- /token -------------------------------------------------------------------------------------


def test_basic_for_one_client_with_body_credentials_of_another_gets_no_token(
    caller: Caller, database: Database, service_a: RegisteredClient, service_b: RegisteredClient
) -> None:
    body = _form(
        grant_type="client_credentials",
        client_id=service_a.client_id,
        client_secret=_secret(service_a),
    )
    _refused_and_audited(caller, database, body, (service_b.client_id, _secret(service_b)))


def test_a_wrong_body_secret_beside_a_good_basic_header_is_refused(
    caller: Caller, database: Database, service_a: RegisteredClient
) -> None:
    body = _form(grant_type="client_credentials", client_secret="not-the-secret")
    _refused_and_audited(caller, database, body, (service_a.client_id, _secret(service_a)))


def test_body_client_id_of_another_client_beside_basic_is_refused(
    caller: Caller, database: Database, service_a: RegisteredClient, service_b: RegisteredClient
) -> None:
    body = _form(grant_type="client_credentials", client_id=service_b.client_id)
    _refused_and_audited(caller, database, body, (service_a.client_id, _secret(service_a)))


def test_a_client_assertion_beside_basic_is_refused(
    caller: Caller, database: Database, service_a: RegisteredClient
) -> None:
    body = _form(
        grant_type="client_credentials",
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion="eyJhbGciOiJub25lIn0.e30.",
    )
    _refused_and_audited(caller, database, body, (service_a.client_id, _secret(service_a)))


def test_a_body_client_id_equal_to_the_basic_user_name_is_one_method_and_accepted(
    caller: Caller, service_a: RegisteredClient
) -> None:
    body = _form(grant_type="client_credentials", client_id=service_a.client_id)
    response = caller.post("/token", body, auth=(service_a.client_id, _secret(service_a)))
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_body_only_credentials_are_still_accepted(
    caller: Caller, service_a: RegisteredClient
) -> None:
    body = _form(
        grant_type="client_credentials",
        client_id=service_a.client_id,
        client_secret=_secret(service_a),
    )
    assert caller.post("/token", body).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        "grant_type=client_credentials&grant_type=authorization_code",
        "grant_type=client_credentials&grant_type=client_credentials",
        "grant_type=client_credentials&scope=api:read&scope=api:admin",
    ],
)
def test_a_repeated_body_parameter_is_refused(
    caller: Caller, database: Database, service_a: RegisteredClient, body: str
) -> None:
    _refused_and_audited(caller, database, body, (service_a.client_id, _secret(service_a)))


def test_grant_type_in_the_query_string_is_refused(
    prod_server: LiveServer, caller: Caller, database: Database, service_a: RegisteredClient
) -> None:
    request_id = secrets.token_hex(12)
    response = caller.post(
        "/token?grant_type=client_credentials",
        b"",
        auth=(service_a.client_id, _secret(service_a)),
        request_id=request_id,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert len(_token_failures(database, request_id)) == 1
    # the same parameter in the query AND the body: still refused, whatever the body says
    both = caller.post(
        "/token?scope=api:admin",
        _form(grant_type="client_credentials"),
        auth=(service_a.client_id, _secret(service_a)),
    )
    assert both.status_code == 400


def test_refusals_count_against_the_token_failure_limit(
    caller: Caller, service_a: RegisteredClient
) -> None:
    auth = (service_a.client_id, _secret(service_a))
    duplicated = "grant_type=client_credentials&grant_type=client_credentials"
    statuses = {caller.post("/token", duplicated, auth=auth).status_code for _ in range(30)}
    assert statuses == {400}  # ECHO_TOKEN_FAILURE_RATE_LIMIT: 30/minute (the default)
    good = caller.post("/token", _form(grant_type="client_credentials"), auth=auth)
    assert good.status_code == 429


# -- every client-authenticated endpoint ---------------------------------------------------------


def _valid_body(path: str) -> dict[str, str]:
    return {"grant_type": "client_credentials"} if path == "/token" else {"token": "x.y.z"}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", sorted(MALFORMED_BASIC))
def test_malformed_basic_credentials_are_invalid_client_never_500(
    caller: Caller, path: str, case: str
) -> None:
    response = caller.post(
        path,
        _form(**_valid_body(path)),
        headers={"Authorization": "Basic " + MALFORMED_BASIC[case]},
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_nul_in_a_body_client_id_is_invalid_client_never_500(caller: Caller, path: str) -> None:
    body = _form(**_valid_body(path), client_id="client\x00id", client_secret="s")
    response = caller.post(path, body)
    assert response.status_code == 400, response.text
    # invalid_client from the endpoint's own check; invalid_request when the input-hygiene
    # layer in web/ refuses the NUL first
    assert response.json()["error"] in {"invalid_client", "invalid_request"}


@pytest.mark.parametrize("path", ENDPOINTS[1:])
def test_two_authentication_methods_are_refused_at_every_endpoint(
    caller: Caller, service_a: RegisteredClient, service_b: RegisteredClient, path: str
) -> None:
    auth = (service_b.client_id, _secret(service_b))
    mixed = caller.post(
        path,
        _form(token="x.y.z", client_id=service_a.client_id, client_secret=_secret(service_a)),
        auth=auth,
    )
    wrong_secret = caller.post(path, _form(token="x.y.z", client_secret="wrong"), auth=auth)
    for response in (mixed, wrong_secret):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ENDPOINTS[1:])
def test_repeated_or_query_parameters_are_refused_at_every_endpoint(
    caller: Caller, service_a: RegisteredClient, path: str
) -> None:
    auth = (service_a.client_id, _secret(service_a))
    repeated = caller.post(path, "token=a.b.c&token=garbage", auth=auth)
    in_query = caller.post(f"{path}?token=a.b.c", b"", auth=auth)
    for response in (repeated, in_query):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"


# -- /revoke (RFC 7009 §2.2) ---------------------------------------------------------------------


def _answer(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers, minus what differs between any two requests."""
    headers = sorted(
        (k, v) for k, v in response.headers.items() if k not in {"x-request-id", "date"}
    )
    return response.status_code, response.content, headers


def _revoke(server: LiveServer, client: RegisteredClient, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/revoke",
        data={"token": token},
        auth=(client.client_id, client.client_secret or ""),
    )


def _introspect(server: LiveServer, client: RegisteredClient, token: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.post(
        f"{server.base_url}/introspect",
        data={"token": token},
        auth=(client.client_id, client.client_secret or ""),
    ).json()
    return answer


def _revocation_refusals(server: LiveServer, client_id: str) -> list[AuditEvent]:
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(
                        AuditEvent.event_type == "oauth.token.revoked",
                        AuditEvent.client_id == client_id,
                        AuditEvent.outcome == "failure",
                    )
                )
            )
    finally:
        database.dispose()


def test_revoking_another_clients_access_token_answers_like_garbage_and_revokes_nothing(
    dev_server: LiveServer,
) -> None:
    owner, stranger = service_client(dev_server), service_client(dev_server)
    token = client_credentials_token(dev_server, owner)["access_token"]

    for_garbage = _revoke(dev_server, stranger, "garbage-" + secrets.token_urlsafe(8))
    for_live_token = _revoke(dev_server, stranger, token)

    assert for_live_token.status_code == 200
    assert _answer(for_live_token) == _answer(for_garbage)
    assert _introspect(dev_server, owner, token)["active"] is True


def test_revoking_another_clients_refresh_token_leaves_the_family_alive(
    dev_server: LiveServer,
) -> None:
    user = create_user(dev_server.env["ECHO_DATABASE_URL"])
    rp = RelyingParty(dev_server, web_client(dev_server), "openid offline_access")
    try:
        browser = Browser(dev_server)
        browser.login(user.username, user.password)
        token = rp.fetch_token(rp.authorize(browser))
        stranger = web_client(dev_server)

        for_garbage = _revoke(dev_server, stranger, secrets.token_urlsafe(32))
        for_live_token = _revoke(dev_server, stranger, token["refresh_token"])

        assert _answer(for_live_token) == _answer(for_garbage)
        assert _introspect(dev_server, rp.client, token["refresh_token"])["active"] is True
        refreshed = rp.oauth.refresh_token(
            rp.metadata["token_endpoint"], refresh_token=token["refresh_token"]
        )
        assert refreshed["access_token"]
    finally:
        rp.close()


def test_repeated_attempts_on_another_clients_token_are_recorded_once_per_window(
    dev_server: LiveServer,
) -> None:
    owner, stranger = service_client(dev_server), service_client(dev_server)
    token = client_credentials_token(dev_server, owner)["access_token"]
    for _ in range(5):
        assert _revoke(dev_server, stranger, token).status_code == 200
    refusals = _revocation_refusals(dev_server, stranger.client_id)
    assert len(refusals) == 1
    assert refusals[0].details["error"] == "not_token_owner"
    assert _introspect(dev_server, owner, token)["active"] is True


def test_a_client_still_revokes_its_own_token(dev_server: LiveServer) -> None:
    owner = service_client(dev_server)
    token = client_credentials_token(dev_server, owner)["access_token"]
    assert _revoke(dev_server, owner, token).status_code == 200
    assert _introspect(dev_server, owner, token) == {"active": False}
