"""One AuthlibClient serves every thread while Provider.client keeps it: nothing in it can be
changed in place."""

from __future__ import annotations

import dataclasses

import pytest

from echo_identity.idp.clients import AuthlibClient, ClientRecord

ROW = {
    "client_id": "c1",
    "name": "App",
    "secret_digest": None,
    "redirect_uris": ["https://app.example/cb"],
    "post_logout_redirect_uris": ["https://app.example/bye"],
    "grant_types": ["authorization_code"],
    "scope": "openid",
    "audiences": ["api://a"],
    "id_token_alg": "RS256",
    "vault_providers": [],
    "tokens_not_before": None,
}


def test_a_record_read_from_a_row_holds_no_mutable_list() -> None:
    record = ClientRecord.from_mapping(ROW)
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        assert not isinstance(value, list | dict | set), field.name
    assert record.redirect_uris == ("https://app.example/cb",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.scope = "openid admin"  # type: ignore[misc]


def test_a_shared_client_takes_no_attribute_and_its_metadata_cannot_be_changed() -> None:
    client = AuthlibClient(ClientRecord.from_mapping(ROW), b"k" * 32)
    with pytest.raises(AttributeError):
        client.row = ClientRecord.from_mapping({**ROW, "client_id": "c2"})
    with pytest.raises(AttributeError):
        client.id_token_signed_response_alg = "none"  # type: ignore[misc]
    with pytest.raises(TypeError):
        client.client_metadata["post_logout_redirect_uris"] = ["https://evil.example/"]  # type: ignore[index]
    assert "https://app.example/bye" in client.client_metadata["post_logout_redirect_uris"]
    assert client.id_token_signed_response_alg == "RS256"
    assert client.check_redirect_uri("https://app.example/cb")
