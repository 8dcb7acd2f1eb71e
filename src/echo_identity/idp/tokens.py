"""JWT access tokens (RFC 9068): minting, and strict verification for /verify and friends.

Verification refuses, in this order: malformed compact JWS, an algorithm outside the
allow-list (so ``none`` and any HMAC algorithm — the RS/HS confusion attack — never reach a
key), an unknown or unpublished ``kid`` or one whose algorithm differs from the header's, a bad
signature, a wrong ``typ``, a wrong ``iss``, expiry/not-before/issued-at outside a small leeway,
and an audience the caller does not hold. Revocation is checked by the caller
(:class:`echo_identity.idp.revocation.Revocations`), which needs the database.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from echo_identity.crypto.jwk import ALGORITHMS, eddsa_allowed
from echo_identity.idp.access_token import AccessToken
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.keys import SigningKeys

ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}
ACCESS_TOKEN_ALG = "ES256"  # noqa: S105 - an algorithm name
LEEWAY_SECONDS = 30


def _sign(keys: SigningKeys, alg: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
    key = keys.signing_key(alg)
    with eddsa_allowed():
        token: str = jwt.encode(
            {**header, "alg": alg, "kid": key.kid}, claims, key.key, algorithms=[alg]
        )
    return token


class AccessTokenIssuer:
    """Mints RFC 9068 access tokens signed with the current ES256 key."""

    def __init__(self, keys: SigningKeys, issuer: str, ttl: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self.ttl = ttl

    def issue(
        self,
        *,
        client_id: str,
        subject: str,
        audience: list[str],
        scope: str,
        auth_time: int | None = None,
    ) -> AccessToken:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience[0] if len(audience) == 1 else audience,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
        }
        if auth_time is not None:
            claims["auth_time"] = auth_time
        return AccessToken(_sign(self._keys, ACCESS_TOKEN_ALG, {"typ": "at+jwt"}, claims), claims)


def audiences_of(claims: dict[str, Any]) -> set[str]:
    """The audiences a token's ``aud`` claim names (a string or a list; anything else: none)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return {aud}
    return {value for value in aud if isinstance(value, str)} if isinstance(aud, list) else set()


def sign_id_token(keys: SigningKeys, alg: str, claims: dict[str, Any]) -> str:
    """An ID token signed with the client's registered algorithm (RS256 by default)."""
    return _sign(keys, alg, {"typ": "JWT"}, claims)


class TokenVerifier:
    """Strict verification of tokens this issuer signed."""

    def __init__(self, keys: SigningKeys, issuer: str, leeway: int = LEEWAY_SECONDS) -> None:
        self._keys = keys
        self._issuer = issuer
        self._leeway = leeway

    def verify_access_token(
        self, token: str, audiences: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The claims of a valid access token; raises :class:`InvalidTokenError`.

        ``audiences``: when given, the token's ``aud`` must contain at least one of them.
        """
        header, claims = self._verify_signature(token)
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("The token is not an access token (typ must be at+jwt).")
        self._check_claims(claims, audiences)
        for required in ("sub", "client_id", "jti"):
            if not isinstance(claims.get(required), str):
                raise InvalidTokenError(f"The token has no {required} claim.")
        return claims

    def verify_id_token(self, token: str, *, check_expiry: bool = True) -> dict[str, Any]:
        """The claims of an ID token this issuer signed; raises :class:`InvalidTokenError`
        (also for an access token: same key, same issuer, but not an ID token)."""
        header, claims = self._verify_signature(token)
        if str(header.get("typ", "")).lower() in ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("The token is an access token, not an ID token.")
        self._check_claims(claims, None, check_expiry=check_expiry)
        if not isinstance(claims.get("sub"), str):
            raise InvalidTokenError("The token has no sub claim.")
        return claims

    def _verify_signature(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError):
            raise InvalidTokenError("The token is not a well-formed JWT.") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidTokenError(
                "The token's algorithm is not accepted.", "unsupported_algorithm"
            )
        key = self._keys.verification_key(str(header.get("kid", "")))
        if key is None or key.alg != alg:
            raise InvalidTokenError(
                "The token was not signed by a published key.", "invalid_signature"
            )
        try:
            with eddsa_allowed():
                decoded = jwt.decode(token, key.key, algorithms=[alg])
        except JoseError:
            raise InvalidTokenError(
                "The token signature is invalid.", "invalid_signature"
            ) from None
        return dict(decoded.header), dict(decoded.claims)

    def _check_claims(
        self,
        claims: dict[str, Any],
        audiences: Collection[str] | None,
        *,
        check_expiry: bool = True,
    ) -> None:
        now = time.time()
        if claims.get("iss") != self._issuer:
            raise InvalidTokenError("The token was issued by someone else.", "invalid_issuer")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise InvalidTokenError("The token lacks exp or iat.")
        if check_expiry and exp <= now - self._leeway:
            raise InvalidTokenError("The token has expired.", "token_expired")
        if iat > now + self._leeway:
            raise InvalidTokenError("The token was issued in the future.")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf > now + self._leeway):
            raise InvalidTokenError("The token is not valid yet.")
        if audiences is not None and not audiences_of(claims) & set(audiences):
            raise InvalidTokenError("The token is meant for another audience.", "invalid_audience")
