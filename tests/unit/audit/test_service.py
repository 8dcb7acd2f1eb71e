"""``AuditTrail`` stores people as pseudonyms, tokens as fingerprints and details redacted;
``record_for_request`` commits the event with the request's context and the request's work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, Response
from sqlalchemy import select

from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.models import AuditEvent, AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail, record_for_request
from echo_identity.crypto.digests import fingerprint
from echo_identity.db import Database
from echo_identity.logs import REDACTED
from echo_identity.web import request_id
from echo_identity.web.context import RequestContext, attach_services, request_session
from tests.factories import create_user

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWEtdG9rZW4"
CONTEXT = RequestContext("198.51.100.7", "probe/1.0", "req-service-1")


@pytest.fixture
def trail() -> AuditTrail:
    return AuditTrail(Pseudonyms.from_secret(b"s" * 32))


def stored(database: Database) -> list[AuditEvent]:
    with database.read_session() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def columns(event: AuditEvent) -> list[Any]:
    return [getattr(event, column.key) for column in AuditEvent.__table__.columns]


def test_a_person_is_stored_as_a_pseudonym_and_mapped_never_as_the_sub(
    database: Database, trail: AuditTrail
) -> None:
    sub = create_user(database).sub
    with database.transaction() as session:
        trail.record(session, EventType.LOGIN_SUCCESS, context=CONTEXT, user=sub)
    [event] = stored(database)
    assert event.subject == trail.pseudonyms.of(sub)
    assert event.subject != sub
    assert not any(sub in str(value) for value in columns(event))
    with database.read_session() as session:
        mapping = session.get(AuditPseudonym, event.subject)
    assert mapping is not None
    assert mapping.user_sub == sub  # resolvable until forgotten


def test_the_same_person_gets_another_pseudonym_under_another_secret(database: Database) -> None:
    # Two apps with different secret keys in one process: no shared global decides.
    first = AuditTrail(Pseudonyms.from_secret(b"a" * 32))
    second = AuditTrail(Pseudonyms.from_secret(b"b" * 32))
    with database.transaction() as session:
        first.record(session, EventType.LOGIN_SUCCESS, user="sub-1")
        second.record(session, EventType.LOGIN_SUCCESS, user="sub-1")
    subjects = [event.subject for event in stored(database)]
    assert subjects == [first.pseudonyms.of("sub-1"), second.pseudonyms.of("sub-1")]
    assert subjects[0] != subjects[1]


def test_a_token_is_stored_as_its_fingerprint_only(database: Database, trail: AuditTrail) -> None:
    with database.transaction() as session:
        trail.record(session, EventType.TOKEN_ISSUED, client_id="client-a", token=TOKEN)
    [event] = stored(database)
    assert event.token_fingerprint == fingerprint(TOKEN)
    assert not any(TOKEN in str(value) for value in columns(event))


def test_secrets_handed_in_details_are_redacted_before_they_are_stored(
    database: Database, trail: AuditTrail
) -> None:
    details = {"password": "hunter2-hunter2", "client_secret": "cs-very-secret", "count": 3}
    with database.transaction() as session:
        trail.record(session, EventType.CLIENT_CREATED, actor="cli", details=details)
    [event] = stored(database)
    assert event.details == {"password": REDACTED, "client_secret": REDACTED, "count": 3}


def test_a_user_and_a_subject_together_are_refused_and_nothing_is_stored(
    database: Database, trail: AuditTrail
) -> None:
    with database.transaction() as session, pytest.raises(ValueError, match="not both"):
        trail.record(session, EventType.LOGIN_SUCCESS, user="sub-1", subject="client-a")
    assert stored(database) == []


def test_a_thing_is_stored_as_given_with_the_context_and_outcome(
    database: Database, trail: AuditTrail
) -> None:
    with database.transaction() as session:
        trail.record(
            session,
            EventType.VAULT_TOKEN_DENIED,
            context=CONTEXT,
            outcome="failure",
            severity=Severity.WARNING,
            actor="worker",
            subject="client-b",
            client_id="client-a",
        )
    [event] = stored(database)
    assert (event.actor, event.subject, event.client_id) == ("worker", "client-b", "client-a")
    assert (event.ip, event.user_agent, event.request_id) == (
        CONTEXT.ip,
        CONTEXT.user_agent,
        CONTEXT.request_id,
    )
    assert (event.outcome, event.severity) == ("failure", "warning")
    assert event.chain_seq is None  # appended unsealed; the sealer links it later


def test_record_adds_to_the_callers_transaction_and_a_rollback_drops_it(
    database: Database, trail: AuditTrail
) -> None:
    with database.session() as session:
        trail.record(session, EventType.LOGIN_SUCCESS, actor="cli")
        session.rollback()
    assert stored(database) == []


def test_forgetting_a_user_deletes_the_map_row_and_records_that_it_did(
    database: Database, trail: AuditTrail
) -> None:
    sub = create_user(database).sub
    with database.transaction() as session:
        trail.record(session, EventType.LOGIN_SUCCESS, user=sub)
    with database.transaction() as session:
        pseudonym = trail.forget_user(session, sub, context=CONTEXT)
    assert pseudonym == trail.pseudonyms.of(sub)
    with database.read_session() as session:
        assert session.get(AuditPseudonym, pseudonym) is None
    login, forgotten = stored(database)
    assert login.subject == forgotten.subject == pseudonym  # the chain still names the pseudonym
    assert forgotten.event_type == str(EventType.PSEUDONYM_FORGOTTEN)
    assert forgotten.severity == "warning"


@dataclass(frozen=True)
class _Services:
    database: Database
    audit: AuditTrail


def test_record_for_request_commits_the_event_with_the_requests_context_and_work(
    database: Database, trail: AuditTrail
) -> None:
    app = Flask(__name__)
    attach_services(app, _Services(database, trail))
    request_id.init_app(app)

    @app.post("/act")
    def act() -> Response:
        # Work a service flushed into the request's session, uncommitted until the record.
        trail.record(request_session(), EventType.CLIENT_CREATED, actor="service")
        record_for_request(EventType.TOKEN_ISSUED, client_id="client-a", token=TOKEN)
        request_session().rollback()  # nothing left to undo: both rows are committed
        return Response("ok")

    response = app.test_client().post(
        "/act",
        headers={"User-Agent": "probe/2.0", "X-Request-ID": "req-0123456789"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert response.status_code == 200
    work, event = stored(database)
    assert work.event_type == str(EventType.CLIENT_CREATED)
    assert event.event_type == str(EventType.TOKEN_ISSUED)
    assert (event.ip, event.user_agent, event.request_id) == (
        "203.0.113.9",
        "probe/2.0",
        "req-0123456789",
    )
    assert (event.client_id, event.token_fingerprint) == ("client-a", fingerprint(TOKEN))
