"""Hostile bytes at every form and JSON endpoint: never a 5xx, never a partial write.

The first half replays each request of issue 10 finding 5 (NUL bytes, invalid UTF-8, deep or
unstorable JSON, out-of-range dates) and checks the answer: a 4xx with a stable code, no trace,
and, for a refused sign-in or token request, an audit event. The second half lets hypothesis
(seeded, bounded) mutate well-formed requests to each endpoint with hostile values, doubled
parameters and odd content types, and checks that no answer is a 5xx and that a refused
request changed no table but the audit trail's.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, text

from echo_identity.audit.log_models import ApplicationLog
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.support.browser import PROXY_HOST, Browser, csrf_token
from tests.support.oidc import (
    REDIRECT_URI,
    RegisteredClient,
    client_credentials_token,
    log_client,
    service_client,
    web_client,
)
from tests.support.raw_http import RawResponse, send_raw
from tests.support.server import LiveServer
from tests.support.vault import (
    connect_upstream,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)

# A refused request may write to the audit trail and what watches it only: events, aggregated
# refusals, the in-process sealer's checkpoints and key, and the alerts detection raises.
TRAIL = ("audit_", "alert", "detection_cursors", "alembic_version")
FORM = b"application/x-www-form-urlencoded"


def basic(client_id: str, secret: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{client_id}:{secret}".encode())


@dataclass
class Tables:
    """Row counts of every table but the audit trail's, to spot a partial write."""

    database: Database
    names: list[str]

    @classmethod
    def of(cls, server: LiveServer) -> Tables:
        database = Database(server.env["ECHO_DATABASE_URL"])
        with database.read_session() as session:
            names = inspect(session.connection()).get_table_names()
        kept = sorted(name for name in names if not name.startswith(TRAIL))
        return cls(database, kept)

    def counts(self) -> dict[str, int]:
        """Rows per table, in one round trip."""
        query = " UNION ALL ".join(f"SELECT '{name}', COUNT(*) FROM {name}" for name in self.names)
        with self.database.read_session() as session:
            return dict(session.execute(text(query)).all())


@dataclass
class World:
    """One signed-in user, a web client, a service with vault and audit scopes, a user who
    connected a provider for that service, and the tokens to call every API."""

    server: LiveServer
    tables: Tables
    user: TestUser
    cookie: bytes
    csrf: str
    web: RegisteredClient
    service_token: str
    log_token: str
    vault_user: TestUser
    provider: str


@pytest.fixture(scope="module")
def world(dev_server: LiveServer, upstream_server: LiveServer) -> Iterator[World]:
    url = dev_server.env["ECHO_DATABASE_URL"]
    user = create_user(url)
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    provider = f"hostile{secrets.token_hex(3)}"
    upstream = connect_upstream(dev_server, upstream_server, provider)
    service = vault_service_client(dev_server, provider, "vault:read vault:revoke audit:read")
    vault_user = create_user(url)
    run_connect_flow(dev_server, upstream, vault_user)  # consents to the service above
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items()).encode()
    tables = Tables.of(dev_server)
    yield World(
        server=dev_server,
        tables=tables,
        user=user,
        cookie=cookie,
        csrf=csrf_token(browser.get("/account").text),
        web=web_client(dev_server, "--scope", "openid profile"),
        service_token=vault_api_token(dev_server, service),
        log_token=client_credentials_token(dev_server, log_client(dev_server))["access_token"],
        vault_user=vault_user,
        provider=provider,
    )
    tables.database.dispose()


@dataclass
class ClientSide:
    """The client-authenticating endpoints of the production server, called from an address
    of this module's own: its failed token requests spend that address's failure limit
    (``ECHO_TOKEN_FAILURE_RATE_LIMIT``), not the one every other test shares."""

    server: LiveServer
    tables: Tables
    client: RegisteredClient
    token: str
    ip: str

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", PROXY_HOST.encode()),
            (b"X-Forwarded-For", self.ip.encode()),
        ]


@pytest.fixture(scope="module")
def client_side(prod_server: LiveServer) -> Iterator[ClientSide]:
    tables = Tables.of(prod_server)
    token = client_credentials_token(prod_server, service_client(prod_server))["access_token"]
    yield ClientSide(prod_server, tables, web_client(prod_server), token, unique_ip())
    tables.database.dispose()


@pytest.fixture(autouse=True)
def no_unhandled_errors(dev_server: LiveServer, prod_server: LiveServer) -> Iterator[None]:
    """Whatever a test sends, no server logs an unhandled error (a trace)."""
    before = {server.base_url: len(server.logs()) for server in (dev_server, prod_server)}
    yield
    for server in (dev_server, prod_server):
        assert "unhandled_error" not in server.logs()[before[server.base_url] :]


def assert_refused(response: RawResponse | httpx.Response, status: int, code: str) -> None:
    """A refusal with ``status`` and error ``code``, and no trace in the body."""
    if isinstance(response, RawResponse):
        actual, body = response.status, response.body
    else:
        actual, body = response.status_code, response.content
    assert actual == status, body[:300]
    assert code.encode() in body
    assert b"Traceback" not in body


# --- issue 10, finding 5: each request that answered 500 ------------------------------------


def events_from(server: LiveServer, ip: str, event_type: str) -> list[AuditEvent]:
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.read_session() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(
                        AuditEvent.ip == ip, AuditEvent.event_type == event_type
                    )
                )
            )
    finally:
        database.dispose()


def unique_ip() -> str:
    return f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def test_nul_in_a_sign_in_name_is_a_400_and_the_failed_sign_in_is_audited(
    prod_server: LiveServer,
) -> None:
    ip = unique_ip()
    browser = Browser(prod_server, behind_tls_proxy=True)
    token = csrf_token(browser.get("/login", headers={"X-Forwarded-For": ip}).text)
    response = browser.post(
        "/login",
        {"csrf_token": token, "username": "alice\x00", "password": "hunter2-typed"},
        headers={"X-Forwarded-For": ip},
    )
    assert_refused(response, 400, "invalid_request")
    [refusal] = events_from(prod_server, ip, "auth.login.failure")
    assert refusal.details["input"] == "form"
    assert refusal.subject is None
    assert "alice" not in json.dumps(refusal.details)
    assert "hunter2" not in json.dumps(refusal.details)


def test_nul_in_a_client_id_at_the_token_endpoint_is_a_400_and_is_audited(
    prod_server: LiveServer,
) -> None:
    ip = unique_ip()
    response = httpx.post(
        f"{prod_server.base_url}/token",
        data={"grant_type": "client_credentials", "client_id": "svc\x00", "client_secret": "x"},
        headers={"X-Forwarded-For": ip, "X-Forwarded-Proto": "https"},
    )
    assert_refused(response, 400, "invalid_request")
    [refusal] = events_from(prod_server, ip, "oauth.token.failed")
    assert refusal.details["error"] == "invalid_request"
    assert refusal.client_id is None


def test_a_forwarded_address_that_is_not_an_ip_is_a_400_not_a_database_error(
    prod_server: LiveServer,
) -> None:
    """The address is recorded in every audit event (45 characters at most)."""
    response = httpx.post(
        f"{prod_server.base_url}/token",
        data={"grant_type": "client_credentials"},
        headers={"X-Forwarded-For": "x" * 80, "X-Forwarded-Proto": "https"},
    )
    assert_refused(response, 400, "invalid_request")


def test_nul_in_a_client_id_at_authorize_is_a_400(world: World) -> None:
    query = urlencode({"response_type": "code", "client_id": world.web.client_id + "\x00"})
    response = httpx.get(f"{world.server.base_url}/authorize?{query}")
    assert_refused(response, 400, "invalid_request")


def test_nul_in_a_basic_user_name_at_verify_is_invalid_client(client_side: ClientSide) -> None:
    response = send_raw(
        client_side.server,
        b"POST",
        b"/verify",
        [
            *client_side.headers(),
            (b"Authorization", basic(client_side.client.client_id + "\x00", "x")),
            (b"Content-Type", FORM),
        ],
        b"token=x",
    )
    assert_refused(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("path", ["/token", "/verify", "/introspect", "/revoke"])
@pytest.mark.parametrize(
    "credentials",
    [
        b"Basic " + base64.b64encode(b"\xff\xfe:secret"),
        b"Basic " + base64.b64encode(b"client:\xc3"),
        b"Basic " + base64.b64encode(b"client%ff:secret"),
        "Basic é".encode(),
    ],
)
def test_basic_credentials_that_are_not_utf8_are_invalid_client_not_500(
    client_side: ClientSide, path: str, credentials: bytes
) -> None:
    response = send_raw(
        client_side.server,
        b"POST",
        path.encode(),
        [*client_side.headers(), (b"Authorization", credentials), (b"Content-Type", FORM)],
        b"grant_type=client_credentials&token=x",
    )
    assert_refused(response, 401, "invalid_client")


def test_nul_in_a_path_sub_is_a_400(world: World) -> None:
    response = httpx.get(
        f"{world.server.base_url}/api/v1/users/a%00b/connections",
        headers={"Authorization": f"Bearer {world.service_token}"},
    )
    assert_refused(response, 400, "invalid_request")


def stored_logs(world: World) -> int:
    with world.tables.database.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(ApplicationLog)) or 0)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            '{"level": "info", "message": "deep", "fields": '
            + '{"a": ' * 900
            + "1"
            + "}" * 900
            + "}",
            "json_too_deep",
        ),
        ('{"level": "info", "message": "lone \\ud800 surrogate"}', "invalid_json"),
        ('{"level": "info", "message": "ok", "fields": {"k\\u0000": 1}}', "invalid_json"),
        (
            '[{"level": "info", "message": "ok"}, {"level": "info", "message": "\\udfff"}]',
            "invalid_json",
        ),
        ('{"level": "info", "message": "big", "fields": {"n": 1e999}}', "invalid_json"),
    ],
)
def test_unstorable_log_bodies_are_a_400_and_store_nothing(
    world: World, body: str, code: str
) -> None:
    before = stored_logs(world)
    response = httpx.post(
        f"{world.server.base_url}/log",
        content=body.encode(),
        headers={"Authorization": f"Bearer {world.log_token}"},
    )
    assert_refused(response, 400, code)
    assert stored_logs(world) == before


def vault_token_url(world: World) -> str:
    return (
        f"{world.server.base_url}/api/v1/users/{world.vault_user.sub}"
        f"/connections/{world.provider}/token"
    )


def test_a_100k_deep_body_at_the_vault_token_call_is_a_400(world: World) -> None:
    response = httpx.post(
        vault_token_url(world),
        content=b"[" * 100_000 + b"]" * 100_000,
        headers={"Authorization": f"Bearer {world.service_token}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] in {"invalid_json", "json_too_deep"}


def audit_events(world: World, **params: str) -> httpx.Response:
    return httpx.get(
        f"{world.server.base_url}/api/v1/audit/events",
        params=params,
        headers={"Authorization": f"Bearer {world.service_token}"},
    )


def test_instants_beyond_year_9999_or_before_year_1_filter_instead_of_failing(
    world: World,
) -> None:
    """9999-12-31T23:59:59-23:59 is 10000-01-01T23:58:59Z: after every event."""
    late = audit_events(world, since="9999-12-31T23:59:59-23:59")
    assert late.status_code == 200, late.text
    assert late.json()["events"] == []
    early = audit_events(world, until="0001-01-01T00:00:00+01:00")
    assert early.json()["events"] == []
    everything = audit_events(world, since="0001-01-01T00:00:00+01:00", limit="1")
    assert len(everything.json()["events"]) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"since": "0000-01-01T00:00:00Z"},
        {"since": "2026-13-01T00:00:00Z"},
        {"since": "2026-01-01"},  # a date is not a date-time
        {"since": "2026-01-01T00:00:00"},  # RFC 3339 requires the offset
        {"until": ""},
        {"since": ""},
        {"limit": ""},
        {"limit": "\u00b2"},
        {"limit": "9" * 5000},
        {"cursor": ""},
        {"cursor": "9" * 19},
    ],
)
def test_invalid_or_empty_event_filters_are_a_400(world: World, params: dict[str, str]) -> None:
    assert_refused(audit_events(world, **params), 400, "invalid_request")


# --- hypothesis: hostile mutations of well-formed requests ------------------------------------

NASTY = [
    b"\x00",
    b"a\x00b",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",  # a UTF-16 surrogate encoded as if it were a character
    b"%00",
    b"%ff",
    b"%C3",
    b"\xef\xbb\xbfbom",
    "\u2028\u202e".encode(),
    b"A" * 70_000,
    b"&=&=",
    b"%",
    b"+",
    "Zo\u00eb".encode(),
    b"\x7f\x1b[31m",
    b"' OR 1=1--",
    b"../../etc/passwd",
]
VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.binary(max_size=24),
    st.text(max_size=24).map(str.encode),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3).map(
        lambda s: s.encode("utf-8", "surrogatepass")
    ),
)
HEADER_VALUES = VALUES.map(lambda v: v.replace(b"\r", b"").replace(b"\n", b"")[:200])
HOSTILE_HEADERS = st.one_of(
    st.just([]),
    st.lists(
        st.tuples(
            st.sampled_from([b"User-Agent", b"Cookie", b"Accept-Language", b"X-Request-ID"]),
            HEADER_VALUES,
        ),
        max_size=2,
    ),
    st.just([(b"Cookie", b'echo_session="\\000abc"')]),
    st.just([(b"Authorization", b"Basic " + base64.b64encode(b"\x00:\xff"))]),
)
CONTENT_TYPES = st.sampled_from(
    [
        FORM,
        FORM,
        FORM,
        FORM + b"; charset=ISO-8859-1",
        b"multipart/form-data; boundary=B",
        b"text/plain",
        b"application/json",
        None,
    ]
)


@st.composite
def mutated_pairs(draw: st.DrawFn, base: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """``base`` with some values replaced, some pairs doubled, dropped or added."""
    pairs = [(name.encode(), value.encode()) for name, value in base.items()]
    for index in draw(st.sets(st.integers(0, max(len(pairs) - 1, 0)), max_size=len(pairs))):
        if pairs:
            pairs[index] = (pairs[index][0], draw(VALUES))
    if pairs and draw(st.booleans()):
        pairs.append(draw(st.sampled_from(pairs)))  # a doubled parameter
    if pairs and draw(st.integers(0, 4)) == 0:
        pairs.pop(draw(st.integers(0, len(pairs) - 1)))
    pairs.extend(draw(st.lists(st.tuples(VALUES, VALUES), max_size=2)))
    return pairs


def form_encoded(pairs: list[tuple[bytes, bytes]], raw: bool) -> bytes:
    if raw:  # bytes as typed, '&' and '=' inside values included
        return b"&".join(name + b"=" + value for name, value in pairs)
    return b"&".join(
        quote_from_bytes(name, safe="").encode() + b"=" + quote_from_bytes(value, safe="").encode()
        for name, value in pairs
    )


def multipart(pairs: list[tuple[bytes, bytes]]) -> bytes:
    parts = [
        b'--B\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value + b"\r\n"
        for name, value in pairs
    ]
    return b"".join(parts) + b"--B--\r\n"


@dataclass(frozen=True)
class Endpoint:
    method: bytes
    path: str
    fields: dict[str, str]
    in_query: bool = False
    signed_in: bool = False
    client_auth: bool = False


def endpoints(world: World, side: ClientSide) -> dict[str, Endpoint]:
    authorize = {
        "response_type": "code",
        "client_id": world.web.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile",
        "state": "s",
        "nonce": "n",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    return {
        "login": Endpoint(
            b"POST",
            "/login",
            {"csrf_token": world.csrf, "username": world.user.username, "password": "wrong"},
            signed_in=True,
        ),
        "authorize": Endpoint(b"GET", "/authorize", authorize, in_query=True, signed_in=True),
        "consent": Endpoint(
            b"POST",
            "/authorize",
            {**authorize, "csrf_token": world.csrf, "decision": "deny"},
            signed_in=True,
        ),
        "token": Endpoint(
            b"POST",
            "/token",
            {"grant_type": "authorization_code", "code": "nope", "redirect_uri": REDIRECT_URI},
            client_auth=True,
        ),
        "revoke": Endpoint(b"POST", "/revoke", {"token": "nope"}, client_auth=True),
        "introspect": Endpoint(b"POST", "/introspect", {"token": side.token}, client_auth=True),
        "verify": Endpoint(b"POST", "/verify", {"token": side.token}, client_auth=True),
        "logout": Endpoint(
            b"POST", "/logout", {"csrf_token": "not-this-one", "id_token_hint": "x.y.z"}
        ),
        "logout-link": Endpoint(
            b"GET", "/logout", {"id_token_hint": "x.y.z", "state": "s"}, in_query=True
        ),
        "connect": Endpoint(
            b"POST",
            f"/connections/{world.provider}/connect",
            {"csrf_token": world.csrf, "decision": "deny"},
            signed_in=True,
        ),
        "password": Endpoint(
            b"POST",
            "/account/password",
            {
                "csrf_token": world.csrf,
                "current_password": "wrong",
                "new_password": "a-new-password-1234",
                "new_password_confirmation": "a-new-password-1234",
            },
            signed_in=True,
        ),
        "export": Endpoint(
            b"POST",
            "/account/export",
            {"csrf_token": world.csrf, "current_password": "wrong"},
            signed_in=True,
        ),
        "delete": Endpoint(
            b"POST",
            "/account/delete",
            {"csrf_token": world.csrf, "current_password": "wrong", "confirm_username": "x"},
            signed_in=True,
        ),
        "withdraw": Endpoint(
            b"POST",
            "/account/applications/never-authorised/withdraw",
            {"csrf_token": world.csrf},
            signed_in=True,
        ),
        "userinfo": Endpoint(b"POST", "/userinfo", {"access_token": world.service_token}),
        "events": Endpoint(
            b"GET", "/api/v1/audit/events", {"type": "auth.*", "limit": "5"}, in_query=True
        ),
    }


HOSTILE = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def send(
    world: World,
    side: ClientSide,
    endpoint: Endpoint,
    pairs: list[tuple[bytes, bytes]],
    raw: bool,
    content_type: bytes | None,
    extra: list[tuple[bytes, bytes]],
) -> RawResponse:
    headers = list(extra)
    if endpoint.signed_in:
        headers.append((b"Cookie", world.cookie))
    if endpoint.client_auth:
        headers += side.headers()
        headers.append(
            (b"Authorization", basic(side.client.client_id, side.client.client_secret or ""))
        )
    if endpoint.path.startswith("/api/"):
        headers.append((b"Authorization", f"Bearer {world.service_token}".encode()))
    target, body = endpoint.path.encode(), b""
    if endpoint.in_query:
        target += b"?" + form_encoded(pairs, raw)
    else:
        if content_type is not None:
            headers.append((b"Content-Type", content_type))
        body = (
            multipart(pairs)
            if content_type and content_type.startswith(b"multipart")
            else form_encoded(pairs, raw)
        )
    server = side.server if endpoint.client_auth else world.server
    return send_raw(server, endpoint.method, target, headers, body)


@pytest.mark.parametrize(
    "name",
    [
        "login",
        "authorize",
        "consent",
        "token",
        "revoke",
        "introspect",
        "verify",
        "logout",
        "logout-link",
        "connect",
        "password",
        "export",
        "delete",
        "withdraw",
        "userinfo",
        "events",
    ],
)
def test_hostile_forms_and_queries_never_get_a_5xx_nor_leave_a_partial_write(
    world: World, client_side: ClientSide, name: str
) -> None:
    endpoint = endpoints(world, client_side)[name]
    tables = client_side.tables if endpoint.client_auth else world.tables

    @HOSTILE
    @given(
        pairs=mutated_pairs(endpoint.fields),
        raw=st.booleans(),
        content_type=CONTENT_TYPES,
        extra=HOSTILE_HEADERS,
    )
    def hostile(
        pairs: list[tuple[bytes, bytes]],
        raw: bool,
        content_type: bytes | None,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        before = tables.counts()
        response = send(world, client_side, endpoint, pairs, raw, content_type, extra)
        event(f"status {response.status}")  # --hypothesis-show-statistics
        assert response.status < 500, response.text[:500]
        assert b"Traceback" not in response.body
        if response.status >= 400:  # refused: nothing but the audit trail may have changed
            assert tables.counts() == before

    hostile()


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["\x00", "a\x00", "\udc80", "\ud800x", "\u2028", "A" * 9000]),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


def json_text(value: Any) -> bytes:
    """JSON with lone surrogates written as ``\\uXXXX`` escapes (valid JSON, unstorable text)."""
    return json.dumps(value, ensure_ascii=True).encode()


@st.composite
def hostile_json(draw: st.DrawFn, good: Any) -> bytes:
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return draw(st.binary(max_size=64))
    if shape == 1:
        depth = draw(st.sampled_from([33, 200, 5000, 100_000]))
        return b"[" * depth + b"]" * depth
    if shape == 2:
        return json_text(good)[:-1] + b',"x": ' + json_text(draw(JSON_VALUES)) + b"}"
    if shape == 3:
        return json_text(draw(JSON_VALUES))
    if shape == 4:
        return draw(
            st.sampled_from(
                [
                    b'{"a": NaN}',
                    b'{"a": 1e999}',
                    b"\xef\xbb\xbf{}",
                    b'{"a":1,"a":2}',
                    "{}".encode("utf-16"),
                    b"9" * 5000,
                ]
            )
        )
    return json_text([good, draw(JSON_VALUES)])  # a batch whose second item is hostile


@HOSTILE
@given(body=hostile_json({"level": "info", "message": "hello", "fields": {"k": "v"}}))
def test_hostile_log_bodies_never_get_a_5xx_nor_store_half_a_batch(
    world: World, body: bytes
) -> None:
    before = world.tables.counts()
    response = httpx.post(
        f"{world.server.base_url}/log",
        content=body,
        headers={"Authorization": f"Bearer {world.log_token}"},
        timeout=30,
    )
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert world.tables.counts() == before


@HOSTILE
@given(body=hostile_json({"min_ttl": 0, "force_refresh": False}))
def test_hostile_vault_token_bodies_never_get_a_5xx(world: World, body: bytes) -> None:
    before = world.tables.counts()
    response = httpx.post(
        vault_token_url(world),
        content=body,
        headers={"Authorization": f"Bearer {world.service_token}"},
        timeout=30,
    )
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert world.tables.counts() == before


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect"])
def test_a_foreign_plain_http_host_in_development_is_a_4xx_not_500(
    dev_server: LiveServer, path: str
) -> None:
    """Authlib refuses plain http for a non-loopback host (``insecure_transport``); that
    refusal must reach the caller as a protocol error, not escape the view as a 500."""
    response = httpx.post(
        dev_server.base_url + path,
        headers={"Host": "evil.example"},
        data={"grant_type": "client_credentials", "token": "x"},
        auth=("unknown-client", "secret"),
    )
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text
