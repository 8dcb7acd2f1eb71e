"""Per-process caches reach every worker within a second (``echo_identity.cache``).

"Another worker" is another :class:`Database` on the same database file: the change it makes
cannot reach this app's memory, so this app serves what it read until its clock has moved one
second, then reads again. The app's clock is a :class:`StoppedClock`: its monotonic reading
moves only when the test moves it, so "still cached" and "re-read" do not race the machine.
What must take effect at once (a revoked token or family) is never cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from echo_identity.accounts.models import User
from echo_identity.crypto.digests import keyed_digest
from echo_identity.crypto.secret_formats import SecretKind, mint
from echo_identity.db import Database, utcnow
from echo_identity.idp.clients import ClientRegistry, client_digest_key
from echo_identity.idp.models import IssuedAccessToken, OAuthClient, RevokedAccessToken, TokenFamily
from echo_identity.idp.provider import Provider
from echo_identity.web.context import services_of
from tests.factories import TestUser, create_user
from tests.support.credentials import hold_credentials, userinfo, verify
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, settings_for
from tests.support.oidc import (
    RegisteredClient,
    client_credentials_token,
    service_client,
    web_client,
)
from tests.support.server import LiveServer, start_server
from tests.support.stopped_clock import StoppedClock


@dataclass
class Clocked:
    server: LiveServer
    clock: StoppedClock
    other_worker: Database  # another process's view of the same database

    @property
    def provider(self) -> Provider:
        return _provider(self.server)


def _provider(server: LiveServer) -> Provider:
    assert server.app is not None
    provider: Provider = services_of(server.app).provider
    return provider


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clocked]:
    tmp = tmp_path_factory.mktemp("cache")
    clock = StoppedClock()
    with fresh_database_url(tmp) as url:
        server = start_server(app_environment(tmp / "var", url), tmp / "server.log", clock=clock)
        other = Database(server.env["ECHO_DATABASE_URL"])
        try:
            yield Clocked(server, clock, other)
        finally:
            other.dispose()
            server.stop()


def _token(server: LiveServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
    )


def _disable_elsewhere(clocked: Clocked, client_id: str) -> None:
    settings = settings_for(clocked.server.env)
    with clocked.other_worker.session() as session:
        ClientRegistry(session, settings.secret_key_bytes()).set_disabled(client_id)
        session.commit()


def test_a_client_disabled_by_another_worker_is_refused_here_within_one_second(
    clocked: Clocked,
) -> None:
    server = clocked.server
    client = service_client(server)
    secret = client.client_secret or ""
    assert _token(server, client.client_id, secret).status_code == 200
    _disable_elsewhere(clocked, client.client_id)

    clocked.clock.advance(0.9)
    assert _token(server, client.client_id, secret).status_code == 200  # still cached here
    clocked.clock.advance(0.1)
    refused = _token(server, client.client_id, secret)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"


def test_tokens_of_a_client_disabled_by_another_worker_die_within_one_second(
    clocked: Clocked,
) -> None:
    server = clocked.server
    caller = service_client(server)
    minted = service_client(server, "--audience", caller.client_id)
    token = client_credentials_token(server, minted)["access_token"]
    assert verify(server, caller, token).json()["active"] is True
    _disable_elsewhere(clocked, minted.client_id)

    assert verify(server, caller, token).json()["active"] is True  # still cached here
    clocked.clock.advance(1.0)
    assert verify(server, caller, token).json()["error"] == "client_disabled"


def test_a_secret_rotated_by_another_worker_replaces_the_old_one_here_within_one_second(
    clocked: Clocked,
) -> None:
    server = clocked.server
    client = service_client(server)
    old = client.client_secret or ""
    assert _token(server, client.client_id, old).status_code == 200
    new = mint(SecretKind.CLIENT_SECRET)
    digest_key = client_digest_key(settings_for(server.env).secret_key_bytes())
    with clocked.other_worker.transaction() as session:
        session.execute(
            update(OAuthClient)
            .where(OAuthClient.client_id == client.client_id)
            .values(secret_digest=keyed_digest(digest_key, new))
        )

    assert _token(server, client.client_id, old).status_code == 200  # still cached here
    clocked.clock.advance(1.0)
    refused = _token(server, client.client_id, old)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert _token(server, client.client_id, new).status_code == 200


def test_unknown_client_ids_are_not_kept(clocked: Clocked) -> None:
    clients = clocked.provider.clients
    clients.clear()
    for guess in ("guess-1", "guess-2", "guess-3"):
        assert _token(clocked.server, guess, "nope").status_code == 401
    assert len(clients) == 0


def test_this_process_forgetting_a_client_sees_the_change_at_once(clocked: Clocked) -> None:
    server = clocked.server
    client = service_client(server)
    secret = client.client_secret or ""
    assert _token(server, client.client_id, secret).status_code == 200
    _disable_elsewhere(clocked, client.client_id)
    clocked.provider.clients.forget(client.client_id)
    assert _token(server, client.client_id, secret).status_code == 401


@pytest.fixture
def user_token(clocked: Clocked) -> tuple[TestUser, RegisteredClient, str]:
    """A user's access token from the code flow (it belongs to a token family), and a client
    that may verify it (its own)."""
    server = clocked.server
    client = web_client(server)
    user = create_user(server.env["ECHO_DATABASE_URL"])
    held = hold_credentials(server, client, user, user.password)
    return user, client, str(held.token["access_token"])


def test_a_user_disabled_by_another_worker_loses_their_tokens_here_within_one_second(
    clocked: Clocked, user_token: tuple[TestUser, RegisteredClient, str]
) -> None:
    """Only ``users.disabled`` changes (the family is left alone): the per-user check."""
    server = clocked.server
    user, client, token = user_token
    assert verify(server, client, token).json()["active"] is True
    with clocked.other_worker.transaction() as session:
        session.execute(update(User).where(User.id == user.id).values(disabled=True))

    assert verify(server, client, token).json()["active"] is True  # still cached here
    clocked.clock.advance(1.0)
    refused = verify(server, client, token)
    assert refused.status_code == 401
    assert refused.json()["error"] == "token_revoked"
    assert userinfo(server, token).status_code == 401


def test_a_password_changed_by_another_worker_ends_older_tokens_here_within_one_second(
    clocked: Clocked, user_token: tuple[TestUser, RegisteredClient, str]
) -> None:
    """Only ``users.tokens_not_before`` moves: /userinfo answers from the cache, then refuses."""
    server = clocked.server
    user, _client, token = user_token
    assert userinfo(server, token).status_code == 200
    later = utcnow() + timedelta(seconds=1)
    with clocked.other_worker.transaction() as session:
        session.execute(update(User).where(User.id == user.id).values(tokens_not_before=later))

    assert userinfo(server, token).status_code == 200  # still cached here
    clocked.clock.advance(1.0)
    refused = userinfo(server, token)
    assert refused.status_code == 401
    assert "invalid_token" in refused.headers["WWW-Authenticate"]


def test_a_token_revoked_by_another_worker_is_refused_here_at_once(
    clocked: Clocked,
) -> None:
    server = clocked.server
    caller = service_client(server)
    minted = service_client(server, "--audience", caller.client_id)
    token = client_credentials_token(server, minted)
    assert verify(server, caller, token["access_token"]).json()["active"] is True
    jti = clocked.provider.verifier.verify_access_token(token["access_token"])["jti"]
    with clocked.other_worker.transaction() as session:
        session.add(
            RevokedAccessToken(
                jti=jti, expires_at=datetime.now(UTC) + timedelta(seconds=token["expires_in"])
            )
        )
    assert verify(server, caller, token["access_token"]).json()["error"] == "token_revoked"


def test_a_family_revoked_by_another_worker_is_refused_here_at_once(
    clocked: Clocked, user_token: tuple[TestUser, RegisteredClient, str]
) -> None:
    server = clocked.server
    _user, client, token = user_token
    assert verify(server, client, token).json()["active"] is True
    assert userinfo(server, token).status_code == 200
    jti = clocked.provider.verifier.verify_access_token(token)["jti"]
    with clocked.other_worker.transaction() as session:
        family_id = session.get(IssuedAccessToken, jti).family_id  # type: ignore[union-attr]
        session.execute(
            update(TokenFamily).where(TokenFamily.id == family_id).values(revoked_at=utcnow())
        )
    assert verify(server, client, token).json()["error"] == "token_revoked"
    assert userinfo(server, token).status_code == 401
