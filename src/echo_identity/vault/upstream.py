"""Calls to third-party providers' token and revocation endpoints (httpx, with retries).

Only the client side of RFC 6749 §4.1.3 (code exchange), §6 (refresh) and RFC 7009
(revocation). 5xx answers, timeouts and transport errors are retried with back-off; 4xx are
final. ``invalid_grant`` becomes :class:`UpstreamInvalidGrantError` so the caller can ask the
user to reconnect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from echo_identity.logs import get_logger
from echo_identity.vault.errors import UpstreamError, UpstreamInvalidGrantError

log = get_logger("echo_identity.vault.upstream")
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
BACKOFF_SECONDS = (0.2, 0.6, 1.5)


@dataclass(frozen=True)
class UpstreamToken:
    access_token: str
    token_type: str
    refresh_token: str | None
    expires_in: int | None
    scope: str | None


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str


def parse_token_response(payload: dict[str, Any]) -> UpstreamToken:
    """The token of a successful RFC 6749 §5.1 response; raises :class:`UpstreamError`."""
    access = payload.get("access_token")
    if not isinstance(access, str) or not access:
        raise UpstreamError("The provider's token response has no access_token.")
    expires_in = payload.get("expires_in")
    try:
        expires = int(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        expires = None
    refresh = payload.get("refresh_token")
    return UpstreamToken(
        access_token=access,
        token_type=str(payload.get("token_type") or "Bearer"),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_in=expires,
        scope=str(payload["scope"]) if payload.get("scope") is not None else None,
    )


class Upstream:
    """One provider-facing HTTP client; ``sleep`` is injectable so tests need not wait."""

    def __init__(
        self,
        http: httpx.Client | None = None,
        backoff: Sequence[float] = BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._given = http
        self._made: httpx.Client | None = None
        self._lock = threading.Lock()
        self._backoff = backoff
        self._sleep = sleep

    @property
    def _http(self) -> httpx.Client:
        """The client, made on first use: building its TLS context costs ~0.2 s, which every
        CLI command that builds the services would otherwise pay for nothing."""
        if self._given is not None:
            return self._given
        with self._lock:
            if self._made is None:
                self._made = httpx.Client(timeout=TIMEOUT, follow_redirects=False)
            return self._made

    def close(self) -> None:
        client = self._given or self._made
        if client is not None:
            client.close()

    def _post(self, url: str, data: dict[str, str], client: ClientCredentials) -> httpx.Response:
        last: Exception | None = None
        for attempt, pause in enumerate((*self._backoff, None)):
            try:
                response = self._http.post(
                    url,
                    data=data,
                    auth=(client.client_id, client.client_secret),
                    headers={"Accept": "application/json"},
                )
            except httpx.TransportError as exc:  # timeouts, refused connections, resets
                last = exc
            else:
                if response.status_code < 500:
                    return response
                last = UpstreamError(f"The provider answered HTTP {response.status_code}.")
            log.warning("upstream_retry", url=url, attempt=attempt + 1, error=type(last).__name__)
            if pause is not None:
                self._sleep(pause)
        raise UpstreamError(
            "The provider did not answer properly; the previous token was kept."
        ) from last

    def _token(self, url: str, data: dict[str, str], client: ClientCredentials) -> UpstreamToken:
        response = self._post(url, data, client)
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200:
            error = payload.get("error") if isinstance(payload, dict) else None
            if error == "invalid_grant":
                raise UpstreamInvalidGrantError()
            raise UpstreamError(
                f"The provider refused the request ({error or response.status_code})."
            )
        if not isinstance(payload, dict):
            raise UpstreamError("The provider's token response is not a JSON object.")
        return parse_token_response(payload)

    def exchange_code(
        self,
        token_url: str,
        client: ClientCredentials,
        code: str,
        redirect_uri: str,
        code_verifier: str,
    ) -> UpstreamToken:
        return self._token(
            token_url,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
            client,
        )

    def refresh(
        self, token_url: str, client: ClientCredentials, refresh_token: str
    ) -> UpstreamToken:
        return self._token(
            token_url, {"grant_type": "refresh_token", "refresh_token": refresh_token}, client
        )

    def revoke(self, revocation_url: str, client: ClientCredentials, token: str, hint: str) -> None:
        """RFC 7009 revocation; raises :class:`UpstreamError` unless the provider says 200."""
        response = self._post(revocation_url, {"token": token, "token_type_hint": hint}, client)
        if response.status_code != 200:
            raise UpstreamError(
                f"The provider refused to revoke the token (HTTP {response.status_code})."
            )
