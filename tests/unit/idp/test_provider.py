"""The provider's own rules: access-token audiences, who gets a refresh token, the token a
response carries, and what ``save_token`` keeps of it (families, digests, never a raw refresh
token), on a migrated database without an app or a request."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.audit.models import AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.crypto.digests import fingerprint, lookup_digest
from echo_identity.db import Database, utcnow
from echo_identity.idp.clients import AuthlibClient, ClientRecord
from echo_identity.idp.keys import ensure_signing_keys
from echo_identity.idp.models import (
    AuthorizationCode,
    IssuedAccessToken,
    RefreshToken,
    TokenFamily,
)
from echo_identity.idp.owner import ResourceOwner
from echo_identity.idp.provider import (
    Provider,
    TokenResponse,
    access_token_audience,
    build_provider,
    key_schedule,
)
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.web.context import NO_REQUEST
from tests.factories import create_user

CONFIDENTIAL = ClientRecord(
    client_id="web-app",
    name="Web app",
    secret_digest="0" * 64,
    redirect_uris=["https://app.example/cb"],
    post_logout_redirect_uris=[],
    grant_types=["authorization_code", "refresh_token"],
    scope="openid profile offline_access vault:read logs:write",
    audiences=[],
    id_token_alg="RS256",
    vault_providers=[],
)
PUBLIC = replace(CONFIDENTIAL, client_id="spa", secret_digest=None)
SERVICE = replace(
    CONFIDENTIAL, client_id="service", grant_types=["client_credentials"], redirect_uris=[]
)


def client(record: ClientRecord) -> AuthlibClient:
    return AuthlibClient(record, b"k" * 32)


def claims_in(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# --- audiences and refresh tokens (pure) ----------------------------------------------------


def test_a_client_without_registered_audiences_gets_the_apis_its_scope_calls_for(
    settings: Settings,
) -> None:
    api, log, userinfo = (
        settings.effective_api_audience,
        settings.effective_log_audience,
        settings.effective_userinfo_audience,
    )
    web = client(CONFIDENTIAL)
    assert access_token_audience(settings, web, "profile") == ["web-app"]
    assert access_token_audience(settings, web, "vault:read") == ["web-app", api]
    assert access_token_audience(settings, web, "audit:read vault:revoke") == ["web-app", api]
    assert access_token_audience(settings, web, "logs:write") == ["web-app", log]
    assert access_token_audience(settings, web, "openid vault:read logs:write") == [
        "web-app",
        api,
        log,
        userinfo,
    ]


def test_registered_audiences_are_exactly_the_audience_plus_userinfo_for_openid(
    settings: Settings,
) -> None:
    fenced = client(replace(CONFIDENTIAL, audiences=["api://orders", "api://orders"]))
    assert access_token_audience(settings, fenced, "vault:read logs:write") == ["api://orders"]
    assert access_token_audience(settings, fenced, "openid") == [
        "api://orders",
        settings.effective_userinfo_audience,
    ]


def test_refresh_tokens_need_the_grant_type_and_offline_access_for_public_clients(
    provider: Provider,
) -> None:
    assert provider.refresh_allowed(client(CONFIDENTIAL), "openid")
    assert not provider.refresh_allowed(client(PUBLIC), "openid")
    assert provider.refresh_allowed(client(PUBLIC), "openid offline_access")
    no_grant = client(replace(CONFIDENTIAL, grant_types=["authorization_code"]))
    assert not provider.refresh_allowed(no_grant, "openid offline_access")


# --- generate_token ---------------------------------------------------------------------------


@pytest.fixture
def provider(settings: Settings, database: Database) -> Provider:
    ensure_signing_keys(database, keyring_factory(settings), key_schedule(settings))
    audit = AuditTrail(Pseudonyms.from_secret(settings.secret_key_bytes()))
    return build_provider(settings, database, keyring_factory(settings), audit)


@pytest.fixture
def owner(database: Database) -> ResourceOwner:
    created = create_user(database)
    with database.session() as session:
        user = session.get(User, created.id)
    assert user is not None
    return ResourceOwner(user, 1_700_000_000)


def test_the_response_carries_the_access_token_whose_claims_it_hands_on(
    provider: Provider, owner: ResourceOwner, settings: Settings
) -> None:
    token = provider.generate_token("authorization_code", client(CONFIDENTIAL), owner, "openid")
    assert isinstance(token, TokenResponse)
    assert token.access.token == token["access_token"]
    assert token.access.claims == claims_in(token["access_token"])
    assert token.access.claims["sub"] == owner.user.sub
    assert token.access.claims["auth_time"] == owner.auth_time
    assert token.access.claims["aud"] == ["web-app", settings.effective_userinfo_audience]
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == settings.access_token_ttl
    assert token["scope"] == "openid"
    assert token["refresh_token"].startswith("echo_rt_")
    # The body is what the client receives: the claims are beside it, not in it.
    assert set(json.loads(json.dumps(token))) == {
        "token_type",
        "access_token",
        "expires_in",
        "scope",
        "refresh_token",
    }


def test_refresh_tokens_only_for_users_when_allowed_and_asked(
    provider: Provider, owner: ResourceOwner
) -> None:
    own = provider.generate_token("client_credentials", client(SERVICE), None, "vault:read")
    assert "refresh_token" not in own
    assert own.access.claims["sub"] == "service"
    assert "auth_time" not in own.access.claims
    public = provider.generate_token("authorization_code", client(PUBLIC), owner, "openid")
    assert "refresh_token" not in public
    unasked = provider.generate_token(
        "authorization_code", client(CONFIDENTIAL), owner, "openid", include_refresh_token=False
    )
    assert "refresh_token" not in unasked


# --- save_token (store_token) -----------------------------------------------------------------


def _code(session: Session, owner: ResourceOwner) -> AuthorizationCode:
    now = utcnow()
    code = AuthorizationCode(
        code_digest=lookup_digest("echo_ac_test"),
        client_id="web-app",
        user_id=owner.user.id,
        redirect_uri="https://app.example/cb",
        scope="openid offline_access",
        code_challenge="x" * 43,
        code_challenge_method="S256",
        auth_time=now - timedelta(minutes=1),
        created_at=now,
        expires_at=now + timedelta(minutes=1),
        redeemed_at=now,
    )
    session.add(code)
    session.flush()
    return code


def _request(
    grant_type: str, record: ClientRecord, owner: ResourceOwner | None, **more: Any
) -> Any:
    return SimpleNamespace(
        client=client(record),
        user=owner,
        payload=SimpleNamespace(grant_type=grant_type),
        **more,
    )


def _stored_text(session: Session) -> str:
    """Every value of the tables a token response writes, as one string."""
    rows: list[Any] = [
        *session.scalars(select(TokenFamily)),
        *session.scalars(select(RefreshToken)),
        *session.scalars(select(IssuedAccessToken)),
        *session.scalars(select(AuditEvent)),
    ]
    return json.dumps(
        [{k: v for k, v in vars(row).items() if not k.startswith("_")} for row in rows],
        default=str,
    )


def test_a_code_exchange_starts_a_family_and_keeps_only_the_refresh_tokens_digest(
    provider: Provider, owner: ResourceOwner, database: Database, settings: Settings
) -> None:
    with database.session() as session:
        owner = ResourceOwner(session.merge(owner.user), owner.auth_time)
        code = _code(session, owner)
        token = provider.generate_token(
            "authorization_code", client(CONFIDENTIAL), owner, "openid offline_access"
        )
        request = _request("authorization_code", CONFIDENTIAL, owner, authorization_code=code)
        provider.store_token(session, token, request, NO_REQUEST)

        [family] = session.scalars(select(TokenFamily)).all()
        assert code.family_id == family.id
        assert (family.client_id, family.user_id) == ("web-app", owner.user.id)
        assert family.scope == "openid offline_access"
        assert family.auth_time == code.auth_time
        absolute = timedelta(seconds=settings.refresh_token_absolute_ttl)
        assert family.expires_at - family.created_at == absolute
        [issued] = session.scalars(select(IssuedAccessToken)).all()
        assert issued.jti == token.access.jti
        assert issued.family_id == family.id
        assert issued.expires_at == datetime.fromtimestamp(token.access.expires_at, UTC)
        [refresh] = session.scalars(select(RefreshToken)).all()
        assert refresh.token_digest == lookup_digest(token["refresh_token"])
        assert refresh.family_id == family.id
        idle = timedelta(seconds=settings.refresh_token_idle_ttl)
        assert refresh.expires_at == min(refresh.issued_at + idle, family.expires_at)
        [event] = session.scalars(select(AuditEvent)).all()
        assert event.event_type == "oauth.token.issued"
        assert event.token_fingerprint == fingerprint(token["access_token"])
        assert event.details == {
            "grant_type": "authorization_code",
            "scope": "openid offline_access",
        }
        assert token["refresh_token"] not in _stored_text(session)
        session.commit()


def test_a_refresh_continues_its_family_and_stores_nothing_the_caller_did_not_commit(
    provider: Provider, owner: ResourceOwner, database: Database
) -> None:
    now = utcnow()
    with database.session() as session:
        owner = ResourceOwner(session.merge(owner.user), owner.auth_time)
        family = TokenFamily(
            id="family-1",
            client_id="web-app",
            user_id=owner.user.id,
            scope="openid offline_access",
            created_at=now,
            expires_at=now + timedelta(minutes=10),  # sooner than the idle lifetime
        )
        session.add(family)
        session.flush()
        rotated = RefreshToken(
            token_digest="old",
            family_id=family.id,
            client_id="web-app",
            scope="openid offline_access",
            expires_at=now + timedelta(minutes=5),
            rotated_at=now,
        )
        session.add(rotated)
        session.commit()
        token = provider.generate_token(
            "refresh_token", client(CONFIDENTIAL), owner, "openid offline_access"
        )
        request = _request("refresh_token", CONFIDENTIAL, owner, refresh_token=rotated)
        provider.store_token(session, token, request, NO_REQUEST)

        assert [f.id for f in session.scalars(select(TokenFamily))] == ["family-1"]
        new = session.scalar(
            select(RefreshToken).where(
                RefreshToken.token_digest == lookup_digest(token["refresh_token"])
            )
        )
        assert new is not None
        assert new.family_id == "family-1"
        assert new.expires_at == family.expires_at  # capped by the family's absolute expiry
        assert session.get(IssuedAccessToken, token.access.jti) is not None
        [event] = session.scalars(select(AuditEvent)).all()
        assert event.event_type == "oauth.token.refreshed"
        # store_token only flushes: the token endpoint's one commit makes it durable.
        session.rollback()
        assert session.get(IssuedAccessToken, token.access.jti) is None
        assert session.scalars(select(AuditEvent)).all() == []


def test_a_client_credentials_token_belongs_to_no_family(
    provider: Provider, database: Database
) -> None:
    with database.session() as session:
        token = provider.generate_token("client_credentials", client(SERVICE), None, "vault:read")
        provider.store_token(
            session, token, _request("client_credentials", SERVICE, None), NO_REQUEST
        )
        assert session.scalars(select(TokenFamily)).all() == []
        assert session.scalars(select(IssuedAccessToken)).all() == []
        [event] = session.scalars(select(AuditEvent)).all()
        assert (event.event_type, event.client_id, event.subject) == (
            "oauth.token.issued",
            "service",
            None,
        )
