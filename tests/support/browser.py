"""A minimal cookie-keeping HTTP user agent for functional tests.

It stores cookies itself (instead of httpx's jar) so that ``Secure`` cookies can be exercised
against a production-mode server that sits behind a simulated TLS-terminating proxy.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import httpx

from echo_identity.crypto.digests import lookup_digest
from tests.support.server import LiveServer

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PROXY_HOST = "id.example.test"


def csrf_token(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


class Browser:
    def __init__(self, server: LiveServer, *, behind_tls_proxy: bool = False) -> None:
        self.server = server
        self.behind_tls_proxy = behind_tls_proxy
        self.cookies: dict[str, str] = {}
        self.raw_set_cookies: list[str] = []

    @property
    def session_cookie_name(self) -> str:
        return "__Host-echo_session" if self.behind_tls_proxy else "echo_session"

    def session_digest(self) -> str:
        """The server-side id (SHA-256 of the cookie) of this browser's session."""
        return lookup_digest(self.cookies[self.session_cookie_name])

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.behind_tls_proxy:
            headers.update(
                {
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": PROXY_HOST,
                    "Referer": f"https://{PROXY_HOST}/",
                }
            )
        headers.update(extra or {})
        return headers

    def _remember(self, response: httpx.Response) -> httpx.Response:
        for header in response.headers.get_list("set-cookie"):
            self.raw_set_cookies.append(header)
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def get(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return self._remember(
            httpx.get(self.server.base_url + path, headers=self._headers(headers), timeout=10, **kw)
        )

    def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        return self._remember(
            httpx.post(
                self.server.base_url + path,
                data=data,
                headers=self._headers(headers),
                timeout=10,
                **kw,
            )
        )

    def post_form(self, page: str, action: str, data: dict[str, str]) -> httpx.Response:
        """Load ``page``, take its CSRF token and submit ``data`` to ``action``."""
        token = csrf_token(self.get(page).text)
        return self.post(action, {"csrf_token": token, **data})

    def login(self, username: str, password: str, next_url: str | None = None) -> httpx.Response:
        page = "/login" + (f"?{urlencode({'next': next_url})}" if next_url else "")
        data = {"username": username, "password": password}
        if next_url is not None:
            data["next"] = next_url
        return self.post_form(page, "/login", data)
