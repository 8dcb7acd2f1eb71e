"""A provider's settings, read per hand-out, come from memory for at most a second; a change
made by another process is used from the next read after that."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from echo_identity.cache import FreshFor
from echo_identity.crypto.kek import LocalKekProvider
from echo_identity.db import Database
from echo_identity.keys.keyring import Keyring
from echo_identity.vault.errors import UnknownProviderError
from echo_identity.vault.models import Provider
from echo_identity.vault.providers import ProviderRegistry, ProviderSettings
from tests.support.stopped_clock import StoppedClock
from tests.unit.vault.conftest import KEK


def _registry(session: Session, cache: FreshFor[ProviderSettings]) -> ProviderRegistry:
    return ProviderRegistry(session, Keyring(session, LocalKekProvider([KEK])), cache)


def _register(database: Database) -> int:
    with database.session() as session:
        provider = ProviderRegistry(session, Keyring(session, LocalKekProvider([KEK]))).add(
            "acme",
            client_id="echo-at-acme",
            client_secret="old-secret",
            authorize_url="https://acme.test/authorize",
            token_url="https://acme.test/token",
            authorize_params={"prompt": "consent"},
        )
        session.commit()
        return provider.id


def test_settings_changed_elsewhere_are_used_after_at_most_a_second(database: Database) -> None:
    _register(database)
    clock = StoppedClock()
    cache: FreshFor[ProviderSettings] = FreshFor(clock)
    with database.session() as session:
        assert _registry(session, cache).require("acme").client_id == "echo-at-acme"
    with database.transaction() as other:  # another worker reconfigures the provider
        other.execute(update(Provider).values(client_id="rotated", token_url="https://new.test/t"))

    with database.session() as session:
        kept = _registry(session, cache).require("acme")
        assert (kept.client_id, kept.token_url) == ("echo-at-acme", "https://acme.test/token")
    clock.advance(1.0)
    with database.session() as session:
        fresh = _registry(session, cache).require("acme")
        assert (fresh.client_id, fresh.token_url) == ("rotated", "https://new.test/t")


def test_a_provider_from_memory_is_a_clean_instance_of_the_callers_session(
    database: Database,
) -> None:
    provider_id = _register(database)
    cache: FreshFor[ProviderSettings] = FreshFor(StoppedClock())
    with database.session() as session:
        _registry(session, cache).require("acme")
    with database.session() as session:
        kept = _registry(session, cache).require("acme")
        assert kept in session
        assert kept.id == provider_id
        assert not session.dirty
        assert not session.new
        assert kept.authorize_params == {"prompt": "consent"}
        kept.authorize_params["prompt"] = "none"  # a caller's change stays its own
        secret = ProviderRegistry(session, Keyring(session, LocalKekProvider([KEK]))).credentials(
            kept
        )
        assert secret.client_secret == "old-secret"
        session.rollback()
    with database.session() as session:
        again = _registry(session, cache).require("acme")
        assert again.authorize_params == {"prompt": "consent"}


def test_unknown_names_are_refused_and_not_kept(database: Database) -> None:
    cache: FreshFor[ProviderSettings] = FreshFor(StoppedClock())
    with database.session() as session:
        registry = _registry(session, cache)
        for name in ("nope", "acme"):
            with pytest.raises(UnknownProviderError):
                registry.require(name)
    assert len(cache) == 0
    _register(database)  # created meanwhile: found at once
    with database.session() as session:
        assert _registry(session, cache).require("acme").name == "acme"
