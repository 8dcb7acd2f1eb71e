"""The staged key schedule (pure) and encrypted key storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.idp.keys import ALGORITHMS, KeyInfo, KeySchedule, SigningKeys, SigningKeyStore
from echo_identity.idp.models import SigningKey
from echo_identity.idp.provider import key_schedule
from echo_identity.keys.kek_providers import keyring_factory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEDULE = KeySchedule(publish_ahead=timedelta(hours=1), retention=timedelta(minutes=11))


def _key(kid: str, created: datetime, alg: str = "ES256") -> KeyInfo:
    return KeyInfo(kid, alg, created, created + SCHEDULE.publish_ahead)


def test_new_key_is_published_at_once_but_signs_only_after_publish_ahead() -> None:
    old = KeyInfo("old", "ES256", T0 - timedelta(days=9), T0 - timedelta(days=9))
    new = _key("new", T0)
    keys = [old, new]
    just_before = T0 + SCHEDULE.publish_ahead - timedelta(seconds=1)
    assert SCHEDULE.signing(keys, "ES256", just_before) == old
    assert {k.kid for k in SCHEDULE.published(keys, T0)} == {"old", "new"}
    assert SCHEDULE.signing(keys, "ES256", T0 + SCHEDULE.publish_ahead) == new


def test_superseded_key_stays_published_for_the_retention_then_disappears() -> None:
    old = KeyInfo("old", "ES256", T0 - timedelta(days=9), T0 - timedelta(days=9))
    new = _key("new", T0)
    switched = T0 + SCHEDULE.publish_ahead
    still = switched + SCHEDULE.retention - timedelta(seconds=1)
    assert {k.kid for k in SCHEDULE.published([old, new], still)} == {"old", "new"}
    gone = switched + SCHEDULE.retention
    assert {k.kid for k in SCHEDULE.published([old, new], gone)} == {"new"}


def test_algorithms_rotate_independently() -> None:
    rsa = KeyInfo("rsa", "RS256", T0 - timedelta(days=1), T0 - timedelta(days=1))
    es = _key("es", T0)
    assert SCHEDULE.signing([rsa, es], "RS256", T0) == rsa
    assert SCHEDULE.signing([rsa, es], "ES256", T0) is None


def test_private_keys_are_stored_encrypted_and_reload_for_signing(
    settings: Settings, database: Database
) -> None:
    with database.session() as session:
        store = SigningKeyStore(session, keyring_factory(settings)(session), key_schedule(settings))
        created = store.ensure()
        assert sorted(row.alg for row in created) == sorted(ALGORITHMS)
        assert store.ensure() == []  # idempotent
        session.commit()
        rows = session.scalars(select(SigningKey)).all()
        for row in rows:
            assert b"PRIVATE KEY" not in row.private_key_ciphertext
            assert "d" not in row.public_jwk  # no private member published
    keys = SigningKeys(database, keyring_factory(settings), key_schedule(settings))
    for alg in ALGORITHMS:
        assert keys.signing_key(alg).alg == alg
    assert len(keys.jwks()["keys"]) == len(ALGORITHMS)


def test_rotate_drops_keys_that_are_no_longer_needed(
    settings: Settings, database: Database
) -> None:
    with database.session() as session:
        store = SigningKeyStore(session, keyring_factory(settings)(session), key_schedule(settings))
        store.ensure()
        session.commit()
        first = {r.kid for r in store.rows() if r.alg == "ES256"}
        for row in store.rows():  # pretend the first keys were superseded long ago
            row.created_at -= timedelta(days=30)
            row.activates_at -= timedelta(days=30)
        session.commit()
        store.create("ES256", activates_at=datetime.now(UTC) - timedelta(days=1))
        session.commit()
        store.rotate(["ES256"])
        remaining = {r.kid for r in store.rows() if r.alg == "ES256"}
    assert not first & remaining
    assert len(remaining) == 2  # the signing one and the staged one
