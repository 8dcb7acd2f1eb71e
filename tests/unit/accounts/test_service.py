"""AccountService: validated user creation and authentication that reveals nothing by cost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters
from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.errors import (
    AccountError,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidEmailError,
    InvalidUsernameError,
    UsernameTakenError,
    WeakPasswordError,
    WrongCurrentPasswordError,
)
from echo_identity.accounts.models import User
from echo_identity.accounts.passwords import Passwords
from echo_identity.accounts.service import AccountService
from echo_identity.accounts.sessions import SessionPolicy, SessionRecord, SqlSessionStore
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.crypto.digests import lookup_digest, random_token
from echo_identity.db import Database, utcnow
from echo_identity.idp.credentials import revoke_user_grants
from echo_identity.idp.models import AuthorizationCode, TokenFamily
from tests.factories import TestUser, create_user, fast_passwords
from tests.support.write_lock import write_user_row_now

PASSWORD = "correct horse battery"
AUDIT = AuditTrail(Pseudonyms.from_secret(b"k" * 32))


def _accounts(session: Session, passwords: Passwords) -> AccountService:
    """The service as the wiring point builds it: the provider's grants die with the user."""
    return AccountService(session, passwords, audit=AUDIT, revokers=(revoke_user_grants,))


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    with database.session() as session:
        yield session


@pytest.fixture
def accounts(session: Session) -> AccountService:
    return _accounts(session, fast_passwords())


@pytest.fixture
def user(database: Database) -> TestUser:
    return create_user(database)


@pytest.fixture
def store(database: Database) -> SqlSessionStore:
    """The database session store."""
    return SqlSessionStore(database, SessionPolicy(timedelta(hours=1), timedelta(hours=8)))


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes argon2 is asked to verify against, in order."""
    seen: list[str] = []
    verify = PasswordHasher.verify

    def counting(self: PasswordHasher, password_hash: str, password: str) -> bool:
        seen.append(password_hash)
        return verify(self, password_hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    return seen


def stored_hash(database: Database, user_id: int) -> str:
    with database.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        return user.password_hash


def test_create_user_stores_a_case_folded_username_and_lowercase_email(
    accounts: AccountService,
) -> None:
    user = accounts.create_user("  Alice.Smith ", "Alice@Example.ORG", PASSWORD)

    assert user.username == "alice.smith"
    assert user.email == "alice@example.org"
    assert accounts.find("ALICE.SMITH") is user


@pytest.mark.parametrize(
    ("username", "email", "password", "error", "code"),
    [
        ("", "a@example.org", PASSWORD, InvalidUsernameError, "invalid_username"),
        ("has space", "a@example.org", PASSWORD, InvalidUsernameError, "invalid_username"),
        ("semi;colon", "a@example.org", PASSWORD, InvalidUsernameError, "invalid_username"),
        ("a" * 65, "a@example.org", PASSWORD, InvalidUsernameError, "invalid_username"),
        ("alice", "no-at-sign", PASSWORD, InvalidEmailError, "invalid_email"),
        ("alice", "alice@localhost", PASSWORD, InvalidEmailError, "invalid_email"),
        ("alice", "two@@example.org", PASSWORD, InvalidEmailError, "invalid_email"),
        ("alice", "alice@example.org", "7-chars", WeakPasswordError, "weak_password"),
        ("alice", "alice@example.org", "p" * 1025, WeakPasswordError, "weak_password"),
    ],
)
def test_create_user_rejects_invalid_input_with_a_stable_code(
    accounts: AccountService,
    username: str,
    email: str,
    password: str,
    error: type[AccountError],
    code: str,
) -> None:
    with pytest.raises(error) as caught:
        accounts.create_user(username, email, password)

    assert caught.value.code == code
    assert accounts.list_users() == []


def test_create_user_rejects_a_username_taken_in_another_case(
    accounts: AccountService,
) -> None:
    accounts.create_user("alice", "alice@example.org", PASSWORD)

    with pytest.raises(UsernameTakenError) as caught:
        accounts.create_user("ALICE", "other@example.org", PASSWORD)

    assert caught.value.code == "username_taken"
    assert caught.value.status == 409


def test_create_user_rejects_an_email_taken_in_another_case(accounts: AccountService) -> None:
    accounts.create_user("alice", "alice@example.org", PASSWORD)

    with pytest.raises(EmailTakenError) as caught:
        accounts.create_user("bob", "Alice@Example.org", PASSWORD)

    assert caught.value.code == "email_taken"
    assert caught.value.status == 409


def test_stored_password_hash_is_argon2id_and_never_contains_the_password(
    database: Database, user: TestUser
) -> None:
    password_hash = stored_hash(database, user.id)

    assert password_hash.startswith("$argon2id$")
    assert user.password not in password_hash


def test_authenticate_returns_the_user_for_the_right_password(
    accounts: AccountService, user: TestUser
) -> None:
    authenticated = accounts.authenticate(user.username.upper(), user.password)

    assert authenticated.id == user.id


def test_authenticate_refuses_a_wrong_password(accounts: AccountService, user: TestUser) -> None:
    with pytest.raises(InvalidCredentialsError) as caught:
        accounts.authenticate(user.username, user.password + "x")

    assert caught.value.code == "invalid_credentials"
    assert caught.value.status == 401


def test_authenticate_refuses_an_unknown_user(accounts: AccountService) -> None:
    with pytest.raises(InvalidCredentialsError):
        accounts.authenticate("nobody", PASSWORD)


def test_authenticate_refuses_a_disabled_user_even_with_the_right_password(
    accounts: AccountService, user: TestUser, store: SqlSessionStore
) -> None:
    accounts.disable(user.username, sessions=store)

    with pytest.raises(InvalidCredentialsError):
        accounts.authenticate(user.username, user.password)


def test_unknown_user_costs_one_verification_like_a_wrong_password(
    database: Database, verifications: list[str]
) -> None:
    # Parameters other than the factory's, so a stand-in hash made any other way shows up.
    passwords = Passwords(time_cost=2, memory_cost=8192, parallelism=1)
    user = create_user(database, passwords=passwords)
    with database.session() as session:
        accounts = _accounts(session, passwords)
        with pytest.raises(InvalidCredentialsError):
            accounts.authenticate(user.username, "wrong password")
        wrong_password = list(verifications)
        verifications.clear()

        with pytest.raises(InvalidCredentialsError):
            accounts.authenticate("nobody", "wrong password")
        unknown_user = list(verifications)

    assert len(wrong_password) == 1
    assert len(unknown_user) == 1
    # Equal cost: the stand-in hash is made with the same argon2 parameters.
    assert extract_parameters(unknown_user[0]) == extract_parameters(wrong_password[0])


def test_over_long_username_or_password_still_costs_one_verification(
    accounts: AccountService, user: TestUser, verifications: list[str]
) -> None:
    with pytest.raises(InvalidCredentialsError):
        accounts.authenticate("u" * 257, PASSWORD)
    with pytest.raises(InvalidCredentialsError):
        accounts.authenticate(user.username, "p" * 5000)

    assert len(verifications) == 2


def test_successful_login_upgrades_a_hash_made_with_weaker_parameters(
    database: Database,
) -> None:
    weak = Passwords(time_cost=1, memory_cost=8192, parallelism=1)
    current = Passwords(time_cost=2, memory_cost=8192, parallelism=1)
    user = create_user(database, passwords=weak)
    old_hash = stored_hash(database, user.id)

    with database.session() as session:
        _accounts(session, current).authenticate(user.username, user.password)
        session.commit()  # the sign-in's unit of work (the view commits it with its event)

    new_hash = stored_hash(database, user.id)
    assert new_hash != old_hash
    assert extract_parameters(new_hash).time_cost == 2
    assert current.verify(new_hash, user.password)
    assert not current.needs_rehash(new_hash)


def test_failed_login_leaves_a_weaker_hash_untouched(database: Database) -> None:
    weak = Passwords(time_cost=1, memory_cost=8192, parallelism=1)
    current = Passwords(time_cost=2, memory_cost=8192, parallelism=1)
    user = create_user(database, passwords=weak)
    old_hash = stored_hash(database, user.id)

    with database.session() as session, pytest.raises(InvalidCredentialsError):
        _accounts(session, current).authenticate(user.username, user.password + "x")

    assert stored_hash(database, user.id) == old_hash


# --- a sign-in holds no lock while argon2 runs ---------------------------------------------


class DuringVerify:
    """Runs ``action`` inside the first argon2 verification of ``password_hash``: what another
    connection does while a sign-in hashes."""

    def __init__(self) -> None:
        self.password_hash: str | None = None
        self.action: Callable[[], None] = lambda: None
        self.ran = 0

    def __call__(self, password_hash: str, action: Callable[[], None]) -> None:
        self.password_hash, self.action = password_hash, action


@pytest.fixture
def during_verify(monkeypatch: pytest.MonkeyPatch) -> DuringVerify:
    hook = DuringVerify()
    verify = PasswordHasher.verify

    def hooked(self: PasswordHasher, password_hash: str, password: str) -> bool:
        if password_hash == hook.password_hash and not hook.ran:
            hook.ran += 1
            hook.action()
        return verify(self, password_hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", hooked)
    return hook


def test_another_connection_can_write_while_a_sign_in_hashes(
    database: Database, accounts: AccountService, user: TestUser, during_verify: DuringVerify
) -> None:
    refusals: list[str | None] = []
    during_verify(
        stored_hash(database, user.id),
        lambda: refusals.append(write_user_row_now(database.url, user.id)),
    )

    assert accounts.authenticate(user.username, user.password).id == user.id
    assert refusals == [None]


def test_a_password_reset_while_a_sign_in_hashes_refuses_the_old_password(
    database: Database,
    session: Session,
    accounts: AccountService,
    user: TestUser,
    store: SqlSessionStore,
    during_verify: DuringVerify,
    verifications: list[str],
) -> None:
    def reset() -> None:
        with database.session() as other:
            _accounts(other, fast_passwords()).set_password(
                user.username, "a brand new password", sessions=store
            )

    during_verify(stored_hash(database, user.id), reset)

    with pytest.raises(InvalidCredentialsError):
        accounts.authenticate(user.username, user.password)

    assert during_verify.ran == 1
    assert len(verifications) == 2  # checked again against the new hash, which refuses it
    assert not session.in_transaction()  # the refusal's event needs no lock


def test_a_user_disabled_while_a_sign_in_hashes_does_not_sign_in(
    database: Database,
    accounts: AccountService,
    user: TestUser,
    store: SqlSessionStore,
    during_verify: DuringVerify,
) -> None:
    def disable() -> None:
        with database.session() as other:
            _accounts(other, fast_passwords()).disable(user.username, sessions=store)

    during_verify(stored_hash(database, user.id), disable)

    with pytest.raises(InvalidCredentialsError):
        accounts.authenticate(user.username, user.password)

    assert during_verify.ran == 1


def test_a_concurrent_rehash_of_the_same_password_does_not_refuse_the_sign_in(
    database: Database,
    accounts: AccountService,
    user: TestUser,
    during_verify: DuringVerify,
    verifications: list[str],
) -> None:
    rehashed = fast_passwords().hash(user.password)

    def rehash() -> None:  # what another sign-in of the user commits after a parameter change
        with database.session() as other:
            found = other.get(User, user.id)
            assert found is not None
            found.password_hash = rehashed
            other.commit()

    during_verify(stored_hash(database, user.id), rehash)

    assert accounts.authenticate(user.username, user.password).id == user.id
    assert verifications[1] == rehashed  # checked once more, against what is stored now


def test_a_sign_in_returns_under_the_write_lock_its_caller_commits(
    database: Database, session: Session, accounts: AccountService, user: TestUser
) -> None:
    accounts.authenticate(user.username, user.password)

    assert session.in_transaction()
    # Held until the sign-in's event is committed (on PostgreSQL: the user's row lock).
    assert write_user_row_now(database.url, user.id) is not None
    session.commit()
    assert write_user_row_now(database.url, user.id) is None


def test_authenticate_refuses_to_run_in_an_open_transaction(
    accounts: AccountService, user: TestUser, verifications: list[str]
) -> None:
    accounts.find(user.username)  # the caller's transaction, maybe holding the write lock

    with pytest.raises(RuntimeError):
        accounts.authenticate(user.username, user.password)

    assert verifications == []


# --- credentials die with their owner -----------------------------------------------------


def _session_of(store: SqlSessionStore, user_id: int) -> str:
    now = utcnow()
    sid = lookup_digest(random_token())
    store.put(SessionRecord(sid=sid, user_id=user_id, created_at=now, last_seen_at=now))
    return sid


def _credentials_of(database: Database, user_id: int, tag: str) -> None:
    """One live token family, one unredeemed and one redeemed authorization code."""
    now = utcnow()
    with database.transaction() as session:
        session.add(
            TokenFamily(
                id=f"family-{tag}",
                client_id="app",
                user_id=user_id,
                scope="openid",
                created_at=now,
                expires_at=now + timedelta(days=1),
            )
        )
        for state, redeemed_at in (("pending", None), ("redeemed", now)):
            session.add(
                AuthorizationCode(
                    code_digest=f"{tag}-{state}",
                    client_id="app",
                    user_id=user_id,
                    redirect_uri="https://app.example/cb",
                    scope="openid",
                    code_challenge="x" * 43,
                    code_challenge_method="S256",
                    auth_time=now,
                    created_at=now,
                    expires_at=now + timedelta(minutes=1),
                    redeemed_at=redeemed_at,
                )
            )


def _state_of(database: Database, user_id: int) -> tuple[str, Any, list[str], list[Any]]:
    with database.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        codes = session.scalars(
            select(AuthorizationCode.code_digest)
            .where(AuthorizationCode.user_id == user_id)
            .order_by(AuthorizationCode.code_digest)
        ).all()
        families = session.scalars(
            select(TokenFamily.revoked_reason).where(TokenFamily.user_id == user_id)
        ).all()
        return user.password_hash, user.tokens_not_before, list(codes), list(families)


def test_a_reset_ends_exactly_the_users_sessions_codes_and_families(
    accounts: AccountService, database: Database, store: SqlSessionStore
) -> None:
    alice, bob = create_user(database), create_user(database)
    for person, tag in ((alice, "a"), (bob, "b")):
        _session_of(store, person.id)
        _credentials_of(database, person.id, tag)
    bob_before = _state_of(database, bob.id)
    started = utcnow()

    revoked = accounts.set_password(alice.username, "a brand new password", sessions=store)

    assert revoked.counts() == {"sessions": 1, "token_families": 1, "authorization_codes": 1}
    password_hash, not_before, codes, families = _state_of(database, alice.id)
    assert not_before is not None
    assert not_before >= started
    assert codes == ["a-redeemed"]  # kept: a replay of it must still be recognised
    assert families == ["credentials_revoked"]
    assert store.for_user(alice.id) == []
    assert fast_passwords().verify(password_hash, "a brand new password")
    assert _state_of(database, bob.id) == bob_before
    assert len(store.for_user(bob.id)) == 1


def test_a_wrong_current_password_changes_nothing(
    database: Database, store: SqlSessionStore
) -> None:
    user = create_user(database)
    _session_of(store, user.id)
    _credentials_of(database, user.id, "w")
    before = _state_of(database, user.id)

    with database.session() as session:
        accounts = _accounts(session, fast_passwords())
        row = accounts.get(user.id)
        assert row is not None
        with pytest.raises(WrongCurrentPasswordError) as caught:
            accounts.change_password(row, user.password + "x", PASSWORD, PASSWORD, sessions=store)

    assert caught.value.status == 400
    assert _state_of(database, user.id) == before
    assert len(store.for_user(user.id)) == 1


def test_an_over_long_current_password_still_costs_one_verification(
    accounts: AccountService, user: TestUser, store: SqlSessionStore, verifications: list[str]
) -> None:
    row = accounts.get(user.id)
    assert row is not None
    with pytest.raises(WrongCurrentPasswordError):
        accounts.change_password(row, "p" * 5000, PASSWORD, PASSWORD, sessions=store)

    assert len(verifications) == 1


def test_re_enabling_a_user_brings_nothing_back(
    database: Database, store: SqlSessionStore, user: TestUser
) -> None:
    session = database.session()
    accounts = _accounts(session, fast_passwords())
    _credentials_of(database, user.id, "e")
    accounts.disable(user.username, sessions=store)
    disabled = _state_of(database, user.id)

    enabled = accounts.enable(user.username)
    session.commit()  # the command's unit of work

    assert not enabled.disabled
    assert _state_of(database, user.id) == disabled
    assert accounts.authenticate(user.username, user.password).id == user.id
    session.close()
