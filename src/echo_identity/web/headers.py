"""Security headers on every response (a header the view set itself is kept)."""

from __future__ import annotations

from flask import Flask, Response, request

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
HSTS = "max-age=31536000; includeSubDomains"
_EVERY_RESPONSE = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
# Pages carry CSRF tokens and account data; keep them out of shared caches.
_NOT_STATIC = (("Cache-Control", "no-store"),)
_PRODUCTION = (("Strict-Transport-Security", HSTS),)


def security_headers(*, production: bool, static: bool) -> tuple[tuple[str, str], ...]:
    """The headers a response gets unless it has them: for a file under ``/static/`` or not,
    in production or not."""
    return _EVERY_RESPONSE + (() if static else _NOT_STATIC) + (_PRODUCTION if production else ())


def init_app(app: Flask, *, production: bool) -> None:
    # Built once, with their names lowered for the comparison: only the response varies.
    for_pages, for_static = (
        tuple(
            (key.lower(), key, value)
            for key, value in security_headers(production=production, static=static)
        )
        for static in (False, True)
    )

    def add_headers(response: Response) -> Response:
        headers = response.headers
        wanted = for_static if request.path.startswith("/static/") else for_pages
        present = set(headers.keys(lower=True))
        headers.extend([(key, value) for lowered, key, value in wanted if lowered not in present])
        return response

    app.after_request(add_headers)
