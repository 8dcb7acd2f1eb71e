"""The /api/v1 OpenAPI document: data in the web layer that still says what the domains do."""

from __future__ import annotations

from echo_identity.audit import event_search
from echo_identity.web import openapi
from echo_identity.web.openapi import openapi_document


def test_the_audit_paging_the_document_promises_is_the_one_event_search_enforces() -> None:
    assert openapi.DEFAULT_LIMIT == event_search.DEFAULT_LIMIT
    assert openapi.MAX_LIMIT == event_search.MAX_LIMIT
    assert openapi.CURSOR_PATTERN == event_search.CURSOR_PATTERN


def test_the_document_names_its_server_under_the_issuer() -> None:
    document = openapi_document("https://id.example/")
    assert document["servers"] == [{"url": "https://id.example/api/v1"}]
