"""An erasure interrupted after any of its five steps, then run again, finishes the job: each
step is marked done in the commit that did it, and every step is idempotent (issue 13,
acceptance). The interruption is the next step raising (``UserErasure``'s step methods are
the seams)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from echo_identity.audit.events import EventType
from echo_identity.db import Database
from echo_identity.privacy.erasure import Erasures, UserErasure
from echo_identity.privacy.models import Erasure
from echo_identity.services import build_services
from tests.functional.privacy.conftest import events_of, pseudonym_of, rows_left
from tests.functional.privacy.test_erasure import Holdings, assert_erased, give_everything
from tests.support.environment import settings_for
from tests.support.server import LiveServer, run_cli
from tests.support.vault import Upstream

STEPS = [
    "upstream_revoked_at",
    "credentials_revoked_at",
    "data_keys_destroyed_at",
    "rows_deleted_at",
    "pseudonym_forgotten_at",
]
# The method that runs after each step: making it raise interrupts right after that step.
NEXT = {
    1: "_revoke_credentials",
    2: "_destroy_data_keys",
    3: "_delete_rows",
    4: "_forget_pseudonym",
    5: "_finish",
}


class CrashError(Exception):
    """The process died here (a crash, a kill, the database going away)."""


def _erase_until_interrupted(server: LiveServer, sub: str, after: int) -> None:
    services = build_services(settings_for(server.env))
    erasures = Erasures(
        vault=services.vault,
        accounts=services.accounts,
        sessions=services.sessions,
        keyrings=services.keyrings,
        audit=services.audit,
    )

    def interrupt(*_args: object) -> None:
        raise CrashError()

    try:
        with pytest.MonkeyPatch.context() as patch, services.database.session() as session:
            patch.setattr(UserErasure, NEXT[after], interrupt)
            with pytest.raises(CrashError):
                erasures.service(session).erase(sub, requested_by="cli")
    finally:
        services.database.dispose()


def _record(database: Database, sub: str) -> Erasure:
    with database.read_session() as session:
        record = session.scalar(select(Erasure).where(Erasure.sub == sub))
        assert record is not None
        session.expunge(record)
        return record


@pytest.mark.parametrize("after", sorted(NEXT), ids=[f"after-step-{n}" for n in sorted(NEXT)])
def test_an_erasure_interrupted_after_a_step_finishes_when_run_again(
    privacy_server: LiveServer,
    privacy_db: Database,
    privacy_upstream: Upstream,
    after: int,
) -> None:
    holdings: Holdings = give_everything(privacy_server, privacy_upstream)
    user = holdings.user

    _erase_until_interrupted(privacy_server, user.sub, after)

    record = _record(privacy_db, user.sub)
    done = [step for step in STEPS if getattr(record, step) is not None]
    assert done == STEPS[:after]
    assert record.completed_at is None
    assert record.user_id == user.id
    assert privacy_upstream.introspect(holdings.upstream_token) == {"active": False}
    left = rows_left(privacy_db, user.id, user.sub)
    if after == 5:
        assert left == {}
    elif after == 4:
        assert left == {"audit_pseudonyms": 1}
    else:
        assert left["users"] == 1

    rerun = run_cli(privacy_server.env, "users", "delete", user.sub, "--yes", "--json")

    assert rerun.returncode == 0, rerun.stderr
    output = json.loads(rerun.stdout)
    assert output["already_erased"] is False
    assert all(output["steps"].values())
    assert_erased(privacy_server, privacy_db, privacy_upstream, holdings)
    pseudonym = pseudonym_of(privacy_server, user.sub)
    counted = [
        e.event_type
        for e in events_of(
            privacy_db,
            str(EventType.ERASURE_STARTED),
            str(EventType.VAULT_CONNECTION_REVOKED),
            str(EventType.USER_ERASED),
        )
        if e.subject == pseudonym
    ]
    # Started once, the connection revoked once, finished once: done steps are not redone.
    assert counted == [
        EventType.ERASURE_STARTED,
        EventType.VAULT_CONNECTION_REVOKED,
        EventType.USER_ERASED,
    ]


def test_a_half_erased_user_is_found_by_sub_only_once_their_name_is_gone(
    privacy_server: LiveServer, privacy_db: Database, privacy_upstream: Upstream
) -> None:
    holdings = give_everything(privacy_server, privacy_upstream)
    _erase_until_interrupted(privacy_server, holdings.user.sub, 4)

    by_name = run_cli(privacy_server.env, "users", "delete", holdings.user.username, "--yes")
    assert by_name.returncode == 1
    assert "No user has that subject or username" in by_name.stderr
    asked = run_cli(privacy_server.env, "users", "delete", holdings.user.sub, stdin="n\n")
    assert asked.returncode == 1
    assert f"the half-erased user {holdings.user.sub}" in asked.stderr
    assert _record(privacy_db, holdings.user.sub).completed_at is None
