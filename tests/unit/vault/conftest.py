"""Fixtures for the vault service and job tests: a real (migrated SQLite) database, a fake
third-party provider behind an ``httpx.MockTransport`` (the one place a mock transport is
allowed), and a clock the test moves."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.crypto.kek import LocalKekProvider
from echo_identity.db import Database, utcnow
from echo_identity.keys.keyring import Keyring
from echo_identity.vault.models import Connection, Provider
from echo_identity.vault.runtime import VaultRuntime
from echo_identity.vault.service import VaultService
from echo_identity.vault.upstream import Upstream
from tests.factories import create_user

SECRET_KEY = b"s" * 32
KEK = bytes(range(32))
CALLBACK = "https://echo.test/connections/callback"
PROVIDER_URL = "https://provider.test"
REFRESH_WINDOW = timedelta(minutes=5)
TOKEN_LIFETIME = 3600


class Clock:
    """The time the service sees; tests move it with :meth:`advance`."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class FakeProvider:
    """A third-party OAuth provider: RFC 6749 code exchange and refresh (rotating the refresh
    token, so a used one answers ``invalid_grant``) and RFC 7009 revocation."""

    rotate: bool = True
    outage: bool = False  # every call answers 503
    revocation_status: int = 200
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    live_refresh_tokens: set[str] = field(default_factory=set)
    issued_access_tokens: list[str] = field(default_factory=list)
    issued_refresh_tokens: list[str] = field(default_factory=list)
    _serial: Iterator[int] = field(default_factory=itertools.count)

    def handle(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        self.requests.append((request.url.path, form))
        if self.outage:
            return httpx.Response(503, json={"error": "temporarily_unavailable"})
        if request.url.path == "/revoke":
            return httpx.Response(self.revocation_status)
        if form["grant_type"] == "refresh_token":
            if form["refresh_token"] not in self.live_refresh_tokens:
                return httpx.Response(400, json={"error": "invalid_grant"})
            if not self.rotate:
                return httpx.Response(200, json=self._tokens(with_refresh=False))
            self.live_refresh_tokens.discard(form["refresh_token"])
        return httpx.Response(200, json=self._tokens(with_refresh=True))

    def _tokens(self, *, with_refresh: bool) -> dict[str, object]:
        serial = next(self._serial)
        access = f"provider-access-{serial}-Zq8"
        self.issued_access_tokens.append(access)
        body: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "scope": "repo,read:user",
        }
        if with_refresh:
            refresh = f"provider-refresh-{serial}-Kp3"
            self.live_refresh_tokens.add(refresh)
            self.issued_refresh_tokens.append(refresh)
            body["refresh_token"] = refresh
        return body

    def calls(self, path: str, grant_type: str | None = None) -> list[dict[str, str]]:
        return [
            form
            for called, form in self.requests
            if called == path and (grant_type is None or form.get("grant_type") == grant_type)
        ]

    def refreshes(self) -> int:
        return len(self.calls("/token", "refresh_token"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def audit() -> AuditTrail:
    return AuditTrail(Pseudonyms.from_secret(SECRET_KEY))


@pytest.fixture
def vault(provider: FakeProvider, audit: AuditTrail, clock: Clock) -> Iterator[VaultRuntime]:
    keks = LocalKekProvider([KEK])
    http = httpx.Client(transport=httpx.MockTransport(provider.handle))
    yield VaultRuntime(
        keyring_for=lambda session: Keyring(session, keks),
        upstream=Upstream(http, backoff=(0, 0), sleep=lambda _seconds: None),
        audit=audit,
        refresh_window=REFRESH_WINDOW,
        pkce_key=b"p" * 32,
        callback_url=CALLBACK,
        clock=clock,
    )
    http.close()


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    with database.session() as session:
        yield session


@pytest.fixture
def service(vault: VaultRuntime, session: Session) -> VaultService:
    return vault.service(session)


@pytest.fixture
def acme(service: VaultService, session: Session) -> Provider:
    """A registered provider with a revocation endpoint."""
    registered = service.providers.add(
        "acme",
        client_id="echo-at-acme",
        client_secret="acme-client-secret-Wx4",
        authorize_url=f"{PROVIDER_URL}/authorize",
        token_url=f"{PROVIDER_URL}/token",
        revocation_url=f"{PROVIDER_URL}/revoke",
        scope="repo read:user",
    )
    session.commit()
    return registered


def new_user(database: Database, session: Session) -> User:
    user = session.get(User, create_user(database).id)
    assert user is not None
    return user


@pytest.fixture
def user(database: Database, session: Session) -> User:
    return new_user(database, session)


def connect(service: VaultService, session: Session, user: User, provider: Provider) -> Connection:
    """The user completes the connect flow (code exchange), committed as the callback does."""
    connection = service.complete_connect(
        user, provider, "the-code", "the-state", CALLBACK, client_ids=["backend"]
    )
    session.commit()
    return connection


@dataclass
class Connected:
    """A user connected to ``acme`` (the code exchanged and committed), with everything the
    tests look at: the database, the service and its session, the fake provider, the clock."""

    database: Database
    session: Session
    vault: VaultRuntime
    service: VaultService
    provider: FakeProvider
    clock: Clock
    user: User
    acme: Provider
    connection: Connection


@pytest.fixture
def connected(
    database: Database,
    session: Session,
    vault: VaultRuntime,
    service: VaultService,
    provider: FakeProvider,
    clock: Clock,
    user: User,
    acme: Provider,
) -> Connected:
    connection = connect(service, session, user, acme)
    return Connected(database, session, vault, service, provider, clock, user, acme, connection)
