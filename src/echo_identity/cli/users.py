"""``echo-identity users``: create and manage user accounts."""

from __future__ import annotations

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
    from echo_identity.accounts.credentials import CredentialsRevoked
    from echo_identity.accounts.models import User

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
