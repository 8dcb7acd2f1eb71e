"""Authorization code grant (RFC 6749 §4.1) with mandatory S256 PKCE and OIDC ID tokens.

Codes are random, stored as digests, single-use and short-lived. A second redemption is
refused with ``invalid_grant`` and revokes every token the first redemption produced
(RFC 6749 §4.1.2, RFC 9700 §4.5). A code issued before its user was disabled or changed their
password (``users.tokens_not_before``) is refused with ``invalid_grant`` too.

The hooks only add to the request's session; the endpoint commits once (``/authorize`` after
the code is saved, ``/token`` after the tokens are), so a redeemed code and the tokens it
produced are committed together.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import grants as oidc_grants
from authlib.oidc.core.grants.util import create_half_hash
from sqlalchemy import select, update

from echo_identity.accounts.credentials import (
    SESSION_EPOCH_KEY,
    credentials_epoch,
    credentials_void,
)
from echo_identity.accounts.models import User
from echo_identity.accounts.session_cookie import current_session
from echo_identity.audit.events import EventType
from echo_identity.crypto.digests import lookup_digest
from echo_identity.crypto.secret_formats import SecretKind, mint
from echo_identity.db import utcnow
from echo_identity.idp.clients import AuthlibClient
from echo_identity.idp.models import AuthorizationCode
from echo_identity.idp.owner import ResourceOwner
from echo_identity.idp.provider import Provider
from echo_identity.idp.revocation import revoke_after_reuse
from echo_identity.idp.tokens import sign_id_token
from echo_identity.idp.userinfo import user_claims
from echo_identity.web.context import request_context, request_session

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = CLIENT_AUTH_METHODS
    _code_user: User | None = None  # the code's user, locked by query_authorization_code

    def generate_authorization_code(self) -> str:
        """A recognisable code (``echo_ac_…``) instead of Authlib's 48 random characters."""
        return mint(SecretKind.AUTHORIZATION_CODE)

    @property
    def provider(self) -> Provider:
        provider: Provider = self.server.provider
        return provider

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        """Add the code (as its digest) and its audit event to the request's session
        (/authorize commits them).

        Raises ``access_denied`` when the user's credentials were revoked (disable, password
        change or reset) after this browser session signed in: the user row is read ``FOR
        SHARE`` first, so a concurrent revocation either waits for this commit (and deletes the
        code) or has committed before (and is seen here).
        """
        provider = self.provider
        owner: ResourceOwner = request.user
        session = request_session()
        user = _locked_user(owner.user.id)
        if (
            user is None
            or user.disabled
            or current_session().get(SESSION_EPOCH_KEY) != credentials_epoch(user)
        ):
            raise AccessDeniedError(
                "The user's credentials have changed; sign in again.",
                redirect_uri=request.payload.redirect_uri
                or request.client.get_default_redirect_uri(),
            )
        now = utcnow()
        session.add(
            AuthorizationCode(
                code_digest=lookup_digest(code),
                client_id=request.client.get_client_id(),
                user_id=owner.user.id,
                redirect_uri=request.payload.redirect_uri
                or request.client.get_default_redirect_uri(),
                scope=request.scope,
                nonce=request.payload.data.get("nonce"),
                code_challenge=request.payload.data["code_challenge"],
                code_challenge_method=request.payload.data["code_challenge_method"],
                auth_time=(
                    now if owner.auth_time is None else datetime.fromtimestamp(owner.auth_time, UTC)
                ),
                created_at=now,
                expires_at=now + timedelta(seconds=provider.settings.auth_code_ttl),
            )
        )
        provider.audit.record(
            session,
            EventType.CODE_ISSUED,
            context=request_context(),
            client_id=request.client.get_client_id(),
            user=owner.user.sub,
            token=code,
        )
        session.flush()

    def query_authorization_code(
        self, code: str, client: AuthlibClient
    ) -> AuthorizationCode | None:
        """The unexpired, unredeemed code of this client, claimed atomically; else ``None``.

        A code presented again after redemption revokes the tokens it produced. The claim is
        committed by /token with the tokens (once): a concurrent redemption of the same code
        waits for that commit, then finds the code redeemed and revokes its family.
        """
        session = request_session()
        row = session.scalar(
            select(AuthorizationCode).where(AuthorizationCode.code_digest == lookup_digest(code))
        )
        if row is None or row.client_id != client.get_client_id():
            return None
        if row.redeemed_at is not None:
            self._revoke_reused(row, code)
            return None
        if row.expires_at <= utcnow():
            return None
        # The user row first, as credentials revocation takes it (UPDATE users, then DELETE
        # the codes): the claim below holds the code row until /token commits, so claiming
        # before this lock would let the two wait on each other (a deadlock on PostgreSQL).
        # The lock lasts until that commit, so authenticate_user reuses what it read.
        self._code_user = _locked_user(row.user_id)
        claimed = session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == row.id, AuthorizationCode.redeemed_at.is_(None))
            .values(redeemed_at=utcnow())
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            # A concurrent request redeemed it first, or a credentials revocation deleted it.
            current = session.scalar(
                select(AuthorizationCode)
                .where(AuthorizationCode.id == row.id)
                .execution_options(populate_existing=True)
            )
            if current is not None:
                self._revoke_reused(current, code)
            return None
        return row

    def _revoke_reused(self, row: AuthorizationCode, code: str) -> None:
        revoke_after_reuse(
            request_session(),
            self.provider.audit,
            EventType.CODE_REUSE_DETECTED,
            row.family_id,
            row.client_id,
            code,
            request_context(),
        )

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: the row was claimed on lookup and is kept to recognise reuse."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> ResourceOwner | None:
        """The code's user; ``None`` (``invalid_grant``) when the user is gone, disabled, or
        revoked their credentials after the code was issued.

        The user row is read ``FOR SHARE`` and held until the token family is committed, so a
        concurrent revocation either sees that family (and revokes it) or commits first (and
        its ``tokens_not_before`` refuses the code here).
        """
        user = self._code_user
        if user is None or user.id != authorization_code.user_id:
            user = _locked_user(authorization_code.user_id)
        if user is None or credentials_void(
            authorization_code.created_at,
            disabled=user.disabled,
            tokens_not_before=user.tokens_not_before,
        ):
            return None
        return ResourceOwner(user, authorization_code.get_auth_time())


def _locked_user(user_id: int) -> User | None:
    """The user ``user_id`` read afresh and, on PostgreSQL, ``FOR SHARE`` until the request's
    commit: credentials revocation updates this row first, so the two are ordered. (SQLite
    ignores the clause; its writers are serialised by the write lock anyway.)"""
    return request_session().scalar(
        select(User)
        .where(User.id == user_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )


class StrictCodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE for every client (confidential ones too), and only ``S256`` (RFC 9700 §2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256).")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only code_challenge_method=S256 is supported.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: grants.BaseGrant, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'.")
        super().validate_code_verifier(grant, result)


class OpenIDCode(oidc_grants.OpenIDCode):  # type: ignore[misc]
    """ID tokens for the code flow, signed with the client's registered algorithm.

    An extension of the code grant, not a grant: it has no server, so it is given the
    provider whose keys sign its tokens."""

    def __init__(self, provider: Provider, require_nonce: bool = False) -> None:
        super().__init__(require_nonce=require_nonce)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        found = request_session().scalar(
            select(AuthorizationCode.id).where(
                AuthorizationCode.client_id == request.payload.client_id,
                AuthorizationCode.nonce == nonce,
            )
        )
        return found is not None

    def generate_user_info(self, user: ResourceOwner, scope: str) -> dict[str, Any]:
        return user_claims(user.user, scope)

    def encode_id_token(self, token: dict[str, Any], request: OAuth2Request) -> str:
        provider = self.provider
        client: AuthlibClient = request.client
        alg = client.id_token_signed_response_alg
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": provider.settings.issuer,
            "aud": client.get_client_id(),
            "azp": client.get_client_id(),
            "iat": now,
            "exp": now + provider.settings.id_token_ttl,
        }
        claims.update(self.get_authorization_code_claims(request.authorization_code))
        at_hash = create_half_hash(token["access_token"], alg)
        if at_hash is not None:
            claims["at_hash"] = at_hash.decode()
        claims.update(self.generate_user_info(request.user, token["scope"]))
        return sign_id_token(provider.keys, alg, claims)
