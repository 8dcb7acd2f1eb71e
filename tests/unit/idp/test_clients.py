"""Client identifiers and redirect-URI rules."""

from __future__ import annotations

import pytest

from echo_identity.idp.clients import check_redirect_uri, new_client_id
from echo_identity.idp.errors import InvalidRedirectUriError


def test_client_ids_are_alphanumeric_so_they_never_look_like_options() -> None:
    ids = {new_client_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(i.isalnum() and len(i) == 24 for i in ids)


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/cb",
        "http://127.0.0.1:8080/cb",
        "http://localhost/cb",
        "http://[::1]:3000/cb",
    ],
)
def test_https_and_loopback_redirect_uris_are_accepted(uri: str) -> None:
    assert check_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example/cb",
        "https://app.example/cb#frag",
        "javascript:alert(1)",
        "/relative",
        "http://localhost.evil.example/cb",
        "https://",
    ],
)
def test_insecure_or_malformed_redirect_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidRedirectUriError):
        check_redirect_uri(uri)
