"""Retry policy of provider calls: 5xx and transport errors retried with back-off, 4xx final."""

from __future__ import annotations

import socket

import httpx
import pytest

from echo_identity.vault.errors import UpstreamError, UpstreamInvalidGrantError
from echo_identity.vault.upstream import ClientCredentials, Upstream, parse_token_response

CLIENT = ClientCredentials("client", "secret")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens once the socket is closed


def test_unreachable_provider_is_retried_with_backoff_then_reported() -> None:
    pauses: list[float] = []
    upstream = Upstream(backoff=(0.1, 0.2, 0.4), sleep=pauses.append)
    with pytest.raises(UpstreamError):
        upstream.refresh(f"http://127.0.0.1:{_closed_port()}/token", CLIENT, "rt")
    upstream.close()
    assert pauses == [0.1, 0.2, 0.4]


def _upstream(statuses: list[int], body: dict[str, object]) -> tuple[Upstream, list[int]]:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        status = statuses[min(len(calls), len(statuses) - 1)]
        calls.append(status)
        return httpx.Response(status, json=body if status < 500 else {"error": "busy"})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    return Upstream(client, backoff=(0, 0, 0), sleep=lambda _s: None), calls


def test_server_errors_are_retried_until_a_good_answer() -> None:
    upstream, calls = _upstream([503, 502, 200], {"access_token": "at", "expires_in": 60})
    token = upstream.refresh("https://provider.test/token", CLIENT, "rt")
    assert token.access_token == "at"
    assert calls == [503, 502, 200]


def test_invalid_grant_is_final_and_distinguished() -> None:
    upstream, calls = _upstream([400], {"error": "invalid_grant"})
    with pytest.raises(UpstreamInvalidGrantError):
        upstream.refresh("https://provider.test/token", CLIENT, "rt")
    assert calls == [400]


def test_response_without_new_refresh_token_or_lifetime_is_parsed_as_such() -> None:
    token = parse_token_response({"access_token": "at", "token_type": "bearer"})
    assert token.refresh_token is None
    assert token.expires_in is None
