"""Access tokens as minted (RFC 9068 claims and header) and the verifier's refusals, on keys
held in memory: no database, no app."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from joserfc import jwt

from echo_identity.crypto.jwk import eddsa_allowed, generate_key
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.keys import LoadedKey
from echo_identity.idp.tokens import (
    ACCESS_TOKEN_ALG,
    LEEWAY_SECONDS,
    AccessTokenIssuer,
    TokenVerifier,
    audiences_of,
    sign_id_token,
)

ISSUER = "https://id.example"


class MemoryKeys:
    """The two lookups tokens.py makes of ``SigningKeys``, over keys generated in memory."""

    def __init__(self, *algorithms: str) -> None:
        self.loaded = {alg: LoadedKey(f"kid-{alg}", alg, generate_key(alg)) for alg in algorithms}

    def signing_key(self, alg: str) -> LoadedKey:
        return self.loaded[alg]

    def verification_key(self, kid: str) -> LoadedKey | None:
        return next((key for key in self.loaded.values() if key.kid == kid), None)


@pytest.fixture(scope="module")
def keys() -> MemoryKeys:
    return MemoryKeys("ES256", "RS256")


def issuer_on(keys: MemoryKeys, ttl: int = 300, issuer: str = ISSUER) -> AccessTokenIssuer:
    return AccessTokenIssuer(keys, issuer, ttl)


def verifier_on(keys: MemoryKeys, issuer: str = ISSUER) -> TokenVerifier:
    return TokenVerifier(keys, issuer)


def issue(issuer: AccessTokenIssuer, audience: list[str] | None = None, **extra: Any) -> Any:
    return issuer.issue(
        client_id="client-1",
        subject="user-sub",
        audience=audience or ["client-1"],
        scope="openid vault:read",
        **extra,
    )


def header_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refusal(verifier: TokenVerifier, token: str, audiences: list[str] | None = None) -> str:
    with pytest.raises(InvalidTokenError) as refused:
        verifier.verify_access_token(token, audiences)
    return refused.value.code


def test_a_minted_access_token_carries_rfc9068_claims_and_verifies_to_the_same_claims(
    keys: MemoryKeys,
) -> None:
    before = int(time.time())
    access = issue(issuer_on(keys, ttl=600), ["client-1", "https://id.example/api/v1"])
    claims = access.claims
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "user-sub"
    assert claims["client_id"] == "client-1"
    assert claims["scope"] == "openid vault:read"
    assert claims["aud"] == ["client-1", "https://id.example/api/v1"]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 600
    assert access.jti == claims["jti"]
    assert access.expires_at == claims["exp"]
    assert "auth_time" not in claims
    header = header_of(access.token)
    assert header == {"typ": "at+jwt", "alg": ACCESS_TOKEN_ALG, "kid": "kid-ES256"}
    assert verifier_on(keys).verify_access_token(access.token) == claims


def test_one_audience_is_a_string_and_auth_time_is_carried_when_known(keys: MemoryKeys) -> None:
    access = issue(issuer_on(keys), ["only"], auth_time=1_700_000_000)
    assert access.claims["aud"] == "only"
    assert access.claims["auth_time"] == 1_700_000_000
    assert audiences_of(access.claims) == {"only"}


def test_every_token_gets_its_own_jti(keys: MemoryKeys) -> None:
    issuer = issuer_on(keys)
    assert len({issue(issuer).jti for _ in range(20)}) == 20


def test_a_token_of_another_issuer_is_refused(keys: MemoryKeys) -> None:
    foreign = issue(issuer_on(keys, issuer="https://evil.example"))
    assert refusal(verifier_on(keys), foreign.token) == "invalid_issuer"


def test_the_audience_must_name_one_of_the_callers(keys: MemoryKeys) -> None:
    access = issue(issuer_on(keys), ["client-1", "api"])
    verifier = verifier_on(keys)
    assert refusal(verifier, access.token, ["billing"]) == "invalid_audience"
    assert verifier.verify_access_token(access.token, ["billing", "api"])["jti"] == access.jti


def test_an_expired_token_is_refused_beyond_the_leeway_only(keys: MemoryKeys) -> None:
    verifier = verifier_on(keys)
    expired = issue(issuer_on(keys, ttl=-(LEEWAY_SECONDS + 5)))
    assert refusal(verifier, expired.token) == "token_expired"
    just_expired = issue(issuer_on(keys, ttl=-(LEEWAY_SECONDS - 10)))
    assert verifier.verify_access_token(just_expired.token)["jti"] == just_expired.jti


def test_algorithms_outside_the_allow_list_never_reach_a_key(keys: MemoryKeys) -> None:
    claims = issue(issuer_on(keys)).claims
    for alg in ("none", "HS256"):
        forged = f"{b64({'alg': alg, 'typ': 'at+jwt', 'kid': 'kid-ES256'})}.{b64(claims)}.sig"
        assert refusal(verifier_on(keys), forged) == "unsupported_algorithm", alg


def test_a_key_is_used_only_for_its_own_algorithm(keys: MemoryKeys) -> None:
    """An RS256 signature presented under the ES256 key's kid (key confusion) is refused."""
    claims = issue(issuer_on(keys)).claims
    rsa = keys.loaded["RS256"].key
    confused = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "kid-ES256"}, claims, rsa)
    assert refusal(verifier_on(keys), confused) == "invalid_signature"
    unknown = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "nope"}, claims, rsa)
    assert refusal(verifier_on(keys), unknown) == "invalid_signature"


def test_a_tampered_payload_or_a_foreign_key_fails_the_signature(keys: MemoryKeys) -> None:
    access = issue(issuer_on(keys))
    header, _, signature = access.token.split(".")
    tampered = f"{header}.{b64({**access.claims, 'scope': 'admin'})}.{signature}"
    assert refusal(verifier_on(keys), tampered) == "invalid_signature"
    stranger = MemoryKeys("ES256")  # same kid, another key
    assert refusal(verifier_on(keys), issue(issuer_on(stranger)).token) == "invalid_signature"


def test_malformed_tokens_and_missing_claims_are_invalid(keys: MemoryKeys) -> None:
    verifier = verifier_on(keys)
    assert refusal(verifier, "not-a-jwt") == "invalid_token"
    key = keys.loaded["ES256"]
    claims = dict(issue(issuer_on(keys)).claims)
    del claims["jti"]
    no_jti = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}, claims, key.key)
    assert refusal(verifier, no_jti) == "invalid_token"


def test_access_and_id_tokens_are_not_interchangeable(keys: MemoryKeys) -> None:
    verifier = verifier_on(keys)
    access = issue(issuer_on(keys))
    now = int(time.time())
    with eddsa_allowed():
        id_token = sign_id_token(
            keys,
            "RS256",
            {"iss": ISSUER, "sub": "user-sub", "aud": "client-1", "iat": now, "exp": now + 60},
        )
    assert header_of(id_token)["typ"] == "JWT"
    assert verifier.verify_id_token(id_token)["sub"] == "user-sub"
    assert refusal(verifier, id_token) == "invalid_token"  # typ is not at+jwt
    with pytest.raises(InvalidTokenError):
        verifier.verify_id_token(access.token)
