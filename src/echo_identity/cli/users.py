"""``echo-identity users``: create and manage user accounts."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from echo_identity.cli.runtime import (
    echo_error,
    emit,
    fail,
    json_option,
    services_or_exit,
    settings_or_exit,
)
from echo_identity.errors import EchoError

if TYPE_CHECKING:  # the account modules load when a command runs (services_or_exit)
    from sqlalchemy.orm import Session

    from echo_identity.accounts.credentials import CredentialsRevoked
    from echo_identity.accounts.models import User
    from echo_identity.privacy.erasure import Erasures
    from echo_identity.services import Services

password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (keeps it out of shell history).",
)


def _read_password(from_stdin: bool, as_json: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        fail("no terminal to prompt on; pipe the password with --password-stdin", as_json=as_json)
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _describe(user: User) -> dict[str, object]:
    return {
        "sub": user.sub,
        "username": user.username,
        "email": user.email,
        "admin": user.is_admin,
        "disabled": user.disabled,
    }


@click.group()
def users() -> None:
    """Create and manage user accounts."""


@users.command()
@click.argument("name")
@click.option("--email", required=True, help="The user's e-mail address (unique).")
@password_stdin_option
@click.option("--admin", is_flag=True, help="Give the user administrator rights.")
@json_option
def create(name: str, email: str, password_stdin: bool, admin: bool, as_json: bool) -> None:
    """Create the user NAME.

    \b
    Example:
      printf '%s\\n' "$PASSWORD" | echo-identity users create alice \\
          --email alice@example.org --password-stdin --json
    """
    settings = settings_or_exit()
    password = _read_password(password_stdin, as_json)
    services = services_or_exit(settings)
    with services.database.session() as session:
        try:
            user = services.accounts.service(session).create_user(
                name, email, password, admin=admin
            )
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
        session.commit()
    emit(_describe(user), f"created user {user.username} (sub {user.sub})", as_json=as_json)


@users.command("list")
@json_option
def list_users(as_json: bool) -> None:
    """List every user."""
    services = services_or_exit(settings_or_exit())
    with services.database.read_session() as session:
        found = services.accounts.service(session).list_users()
    lines = [
        f"{u.username}\t{u.email}\t{u.sub}"
        + ("\tadmin" if u.is_admin else "")
        + ("\tdisabled" if u.disabled else "")
        for u in found
    ]
    emit({"users": [_describe(u) for u in found]}, "\n".join(lines) or "no users", as_json=as_json)


@users.command("set-password")
@click.argument("name")
@password_stdin_option
@json_option
def set_password(name: str, password_stdin: bool, as_json: bool) -> None:
    """Replace the password of user NAME and sign them out everywhere.

    Every browser session of NAME ends, unredeemed authorization codes are deleted, every
    refresh-token family is revoked, and access tokens already issued to NAME are inactive at
    /verify, /introspect, /userinfo and the vault API from now on. With --json the output
    says how many sessions, token families and codes were ended ("revoked").
    """
    settings = settings_or_exit()
    password = _read_password(password_stdin, as_json)
    services = services_or_exit(settings)
    with services.database.session() as session:
        try:  # commits, then ends the browser sessions
            revoked = services.accounts.service(session).set_password(
                name, password, sessions=services.sessions
            )
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
    emit(
        {**_describe(revoked.user), "revoked": revoked.counts()},
        f"password of {revoked.user.username} changed; {_ended(revoked)}",
        as_json=as_json,
    )


@users.command()
@click.argument("name")
@click.option(
    "--enable", is_flag=True, help="Re-enable instead of disabling (nothing ended comes back)."
)
@json_option
def disable(name: str, enable: bool, as_json: bool) -> None:
    """Disable user NAME: they can no longer sign in, and everything they hold ends.

    Every browser session of NAME ends, unredeemed authorization codes are deleted, every
    refresh-token family is revoked, and access tokens already issued to NAME are inactive at
    /verify, /introspect, /userinfo and the vault API from now on. --enable lets NAME sign in
    again; nothing that was ended comes back. With --json the output of a disable says how
    many sessions, token families and codes were ended ("revoked").
    """
    services = services_or_exit(settings_or_exit())
    with services.database.session() as session:
        accounts = services.accounts.service(session)
        try:
            if enable:
                user = accounts.enable(name)
                session.commit()
            else:  # commits, then ends the browser sessions
                revoked = accounts.disable(name, sessions=services.sessions)
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
    if enable:
        emit(_describe(user), f"user {user.username} enabled", as_json=as_json)
        return
    emit(
        {**_describe(revoked.user), "revoked": revoked.counts()},
        f"user {revoked.user.username} disabled; {_ended(revoked)}",
        as_json=as_json,
    )


def _ended(revoked: CredentialsRevoked) -> str:
    counts = revoked.counts()
    return (
        f"ended {revoked.sessions} session(s), revoked {counts.get('token_families', 0)} token "
        f"family(ies), deleted {counts.get('authorization_codes', 0)} unredeemed code(s)"
    )


def _erasures(services: Services) -> Erasures:
    from echo_identity.privacy.erasure import Erasures

    return Erasures(
        vault=services.vault,
        accounts=services.accounts,
        sessions=services.sessions,
        keyrings=services.keyrings,
        audit=services.audit,
        clock=services.clock.now,
    )


def _user_or_exit(session: Session, who: str, *, as_json: bool) -> User:
    from echo_identity.privacy.errors import UnknownSubjectError
    from echo_identity.privacy.export import find_user

    user = find_user(session, who)
    if user is None:
        echo_error(UnknownSubjectError("No user has that subject or username."), as_json=as_json)
    return user


@users.command()
@click.argument("who", metavar="SUB|NAME")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The file to write (created with mode 600; an existing file is replaced).",
)
@json_option
def export(who: str, out: str, as_json: bool) -> None:
    """Export everything held about the user SUB|NAME as one JSON document (GDPR access and
    portability): profile, sessions, applications and their grants, vault connections (never
    a token), consent records and the audit events about the user. Recorded as
    privacy.user.exported. The file holds personal data: hand it over securely.
    """
    from echo_identity.audit.events import EventType
    from echo_identity.db import utcnow
    from echo_identity.privacy.export import stream_export

    services = services_or_exit(settings_or_exit())
    with services.database.read_session() as session:
        sub = _user_or_exit(session, who, as_json=as_json).sub
    services.audit.write(EventType.USER_EXPORTED, actor="cli", user=sub, details={"via": "cli"})
    chunks = stream_export(
        services.database,
        sub,
        pseudonyms=services.pseudonyms,
        sessions=services.sessions,
        exported_at=utcnow(),
    )
    written = 0
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        for chunk in chunks:
            written += file.write(chunk)
    emit(
        {"sub": sub, "out": out, "characters": written},
        f"exported user {sub} to {out}",
        as_json=as_json,
    )


@users.command()
@click.argument("who", metavar="SUB|NAME")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def delete(who: str, yes: bool, as_json: bool) -> None:
    """Erase the user SUB|NAME (GDPR erasure), or finish an interrupted erasure (give the SUB:
    the name is gone once the user's rows are).

    \b
    In order, each step resumable: revoke every vault connection at its provider (best
    effort: a failure is recorded and counted), end every session, code and token, destroy
    the user's data key (their stored tokens become unreadable everywhere, backups included),
    delete the user's rows, forget their pseudonym. The audit trail keeps its events under
    the pseudonym and records privacy.user.erased. Without --yes it asks first.
    """
    services = services_or_exit(settings_or_exit())
    with services.database.session() as session:
        erasure = _erasures(services).service(session)
        try:
            user, record = erasure.pending(who)
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
        sub = user.sub if user is not None else who
        if record is not None and record.completed_at is not None:
            emit(
                {"sub": sub, "erased": True, "already_erased": True},
                f"user {sub} was already erased",
                as_json=as_json,
            )
            return
        name = (
            f"user {user.username} (sub {sub})"
            if user is not None
            else f"the half-erased user {sub}"
        )
        if not yes and not click.confirm(
            f"Erase {name} and all their data? This cannot be undone", err=True
        ):
            fail("aborted: nothing was erased", as_json=as_json, code="aborted")
        try:
            outcome = erasure.erase(sub, requested_by="cli")
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
    failures = (
        f"; {outcome.upstream_failures} provider(s) could not revoke (recorded)"
        if outcome.upstream_failures
        else ""
    )
    emit(
        outcome.as_dict(),
        f"erased user {outcome.sub} (pseudonym {outcome.pseudonym}){failures}",
        as_json=as_json,
    )


@users.command("end-sessions")
@click.argument("who", metavar="SUB|NAME")
@json_option
def end_sessions(who: str, as_json: bool) -> None:
    """End every browser session of the user SUB|NAME (incident response: account
    takeover). Applications' tokens stay valid: revoke them with `users revoke-grants`.
    Recorded as admin.user.sessions_ended."""
    from echo_identity.audit.events import EventType, Severity

    services = services_or_exit(settings_or_exit())
    with services.database.read_session() as session:
        user = _user_or_exit(session, who, as_json=as_json)
        sub, user_id = user.sub, user.id
    ended = services.sessions.delete_for_user(user_id)
    services.audit.write(
        EventType.SESSIONS_ENDED,
        actor="cli",
        user=sub,
        severity=Severity.WARNING,
        details={"sessions": ended},
    )
    emit({"sub": sub, "sessions": ended}, f"ended {ended} session(s) of {sub}", as_json=as_json)


@users.command("revoke-grants")
@click.argument("who", metavar="SUB|NAME")
@json_option
def revoke_grants(who: str, as_json: bool) -> None:
    """Revoke every grant of the user SUB|NAME (incident response: account takeover): delete
    their unredeemed authorization codes and revoke every token family, so their refresh
    tokens are refused at /token and their access tokens are inactive at /verify,
    /introspect, /userinfo and the vault API. Browser sessions stay: end them with
    `users end-sessions`. Recorded as admin.user.grants_revoked."""
    from echo_identity.audit.events import EventType, Severity
    from echo_identity.db import utcnow
    from echo_identity.idp.credentials import revoke_user_grants

    services = services_or_exit(settings_or_exit())
    with services.database.session() as session:
        user = _user_or_exit(session, who, as_json=as_json)
        counts = revoke_user_grants(session, user, utcnow())
        services.audit.record(
            session,
            EventType.GRANTS_REVOKED,
            actor="cli",
            user=user.sub,
            severity=Severity.WARNING,
            details=counts,
        )
        session.commit()
        sub = user.sub
    emit(
        {"sub": sub, **counts},
        f"revoked {counts['token_families']} token family(ies) and deleted "
        f"{counts['authorization_codes']} unredeemed code(s) of {sub}",
        as_json=as_json,
    )
