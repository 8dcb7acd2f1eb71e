"""Housekeeping deletes exactly the provider rows that can no longer change a decision."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from echo_identity.audit.models import AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from echo_identity.idp.cleanup import Retention, purge_expired
from echo_identity.idp.models import (
    AuthorizationCode,
    IssuedAccessToken,
    RefreshToken,
    RevokedAccessToken,
    TokenFamily,
)
from tests.factories import create_user


def _audit(settings: Settings) -> AuditTrail:
    return AuditTrail(Pseudonyms.from_secret(settings.secret_key_bytes()))


def _family(family_id: str, user_id: int, expires_in: timedelta) -> TokenFamily:
    now = utcnow()
    return TokenFamily(
        id=family_id,
        client_id="app",
        user_id=user_id,
        scope="openid offline_access",
        created_at=now - timedelta(days=40),
        expires_at=now + expires_in,
    )


def _code(digest: str, user_id: int, expired_ago: timedelta) -> AuthorizationCode:
    now = utcnow()
    return AuthorizationCode(
        code_digest=digest,
        client_id="app",
        user_id=user_id,
        redirect_uri="https://app.example/cb",
        scope="openid",
        code_challenge="x" * 43,
        code_challenge_method="S256",
        auth_time=now - expired_ago,
        expires_at=now - expired_ago,
    )


def test_purge_deletes_only_rows_that_can_no_longer_matter_and_records_the_counts(
    database: Database, settings: Settings
) -> None:
    user = create_user(database)
    now = utcnow()
    family_life = timedelta(seconds=settings.refresh_token_absolute_ttl)
    with database.transaction() as session:
        session.add_all(
            [
                _family("gone", user.id, -timedelta(hours=2)),
                # Expired a moment ago: an access token minted just before may still be valid.
                _family("just-expired", user.id, -timedelta(seconds=5)),
                _family("live", user.id, timedelta(days=3)),
            ]
        )
        session.flush()
        session.add_all(
            [
                RefreshToken(
                    token_digest="r1",
                    family_id="gone",
                    client_id="app",
                    scope="openid",
                    expires_at=now - timedelta(hours=3),
                ),
                RefreshToken(
                    token_digest="r2",
                    family_id="live",
                    client_id="app",
                    scope="openid",
                    expires_at=now + timedelta(days=1),
                ),
                IssuedAccessToken(jti="old", family_id="live", expires_at=now - timedelta(hours=1)),
                IssuedAccessToken(
                    jti="new", family_id="live", expires_at=now + timedelta(minutes=5)
                ),
                RevokedAccessToken(jti="old-revoked", expires_at=now - timedelta(hours=1)),
                RevokedAccessToken(jti="fresh-revoked", expires_at=now + timedelta(minutes=5)),
                # A replay of this code could still revoke a live family: kept.
                _code("recent", user.id, timedelta(days=2)),
                _code("ancient", user.id, family_life + timedelta(days=1)),
            ]
        )

    purged = purge_expired(database, _audit(settings), Retention.from_settings(settings), now)

    assert purged == {
        "oauth.token_family.purged": 1,
        "oauth.access_token.purged": 2,
        "oauth.code.purged": 1,
    }
    with database.session() as session:
        assert set(session.scalars(select(TokenFamily.id))) == {"just-expired", "live"}
        assert set(session.scalars(select(RefreshToken.token_digest))) == {"r2"}  # cascade
        assert set(session.scalars(select(IssuedAccessToken.jti))) == {"new"}
        assert set(session.scalars(select(RevokedAccessToken.jti))) == {"fresh-revoked"}
        assert set(session.scalars(select(AuthorizationCode.code_digest))) == {"recent"}
        recorded = {
            event.event_type: event.details["count"]
            for event in session.scalars(select(AuditEvent).where(AuditEvent.actor == "worker"))
        }
    assert recorded == purged


def test_a_pass_with_nothing_to_purge_records_nothing(
    database: Database, settings: Settings
) -> None:
    assert (
        purge_expired(database, _audit(settings), Retention.from_settings(settings), utcnow()) == {}
    )
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0
