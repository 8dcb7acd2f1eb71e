"""Real flows against a running server, sealed by ``echo-identity worker --once``: the trail
verifies, people are stored only as pseudonyms, and the published audit key checks every
checkpoint while staying out of the OIDC JWKS."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import select

from echo_identity.audit import chain
from echo_identity.audit.models import AuditCheckpoint, AuditEvent, AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.support.browser import Browser
from tests.support.oidc import client_credentials_token, service_client
from tests.support.server import LiveServer, run_cli, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development server of its own: these tests seal and verify its whole trail."""
    with running_server(tmp_path_factory.mktemp("audit-chain")) as live:
        yield live


@pytest.fixture(scope="module")
def flows(server: LiveServer) -> TestUser:
    """A failed and a successful sign-in and a client-credentials token, then a seal pass."""
    user = create_user(server.env["ECHO_DATABASE_URL"])
    Browser(server).login(user.username, "wrong-password")
    assert Browser(server).login(user.username, user.password).status_code in (302, 303)
    client_credentials_token(server, service_client(server))
    sealed = run_cli({**server.env, "ECHO_AUDIT_SEAL_GRACE": "0"}, "worker", "--once", "--json")
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(sealed.stdout)["sealed"] >= 3
    return user


@pytest.fixture
def database(server: LiveServer) -> Iterator[Database]:
    db = Database(server.env["ECHO_DATABASE_URL"])
    yield db
    db.dispose()


def test_trail_of_real_flows_verifies_after_a_worker_pass(
    server: LiveServer, flows: TestUser
) -> None:
    result = run_cli(server.env, "audit", "verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["intact"] is True
    assert report["sealed"] >= 3


def test_users_are_stored_as_pseudonyms_mapped_in_a_separate_table(
    server: LiveServer, flows: TestUser, database: Database
) -> None:
    expected = Pseudonyms.from_secret(server.env["ECHO_SECRET_KEY"].encode()).of(flows.sub)
    with database.read_session() as session:
        events = session.scalars(select(AuditEvent)).all()
        mapped = session.scalar(
            select(AuditPseudonym.user_sub).where(AuditPseudonym.pseudonym == expected)
        )
    login = [e for e in events if e.event_type == "auth.login.success"]
    assert [e.subject for e in login] == [expected]
    assert mapped == flows.sub
    issued = [e for e in events if e.event_type == "oauth.token.issued"]
    assert issued
    assert all(e.subject is None for e in issued)  # a client-credentials token has no person
    for stored in events:
        row = json.dumps([stored.actor, stored.subject, stored.details])
        assert flows.sub not in row


def test_published_audit_key_verifies_every_checkpoint_and_is_not_an_oidc_key(
    server: LiveServer, flows: TestUser, database: Database
) -> None:
    published = httpx.get(f"{server.base_url}/.well-known/audit-keys").json()["keys"]
    keys = {jwk["kid"]: OKPKey.import_key(jwk).public_key for jwk in published}
    assert all(jwk["kty"] == "OKP" and "d" not in jwk for jwk in published)
    with database.read_session() as session:
        checkpoints = session.scalars(select(AuditCheckpoint)).all()
    assert checkpoints
    for row in checkpoints:
        checkpoint = chain.Checkpoint(
            row.seq, row.head_hash, row.sealed_through, row.created_at, row.key_id, row.signature
        )
        assert chain.checkpoint_signature_valid(keys[row.key_id], checkpoint)  # type: ignore[arg-type]
    oidc_kids = {k["kid"] for k in httpx.get(f"{server.base_url}/jwks").json()["keys"]}
    assert not oidc_kids & set(keys)
