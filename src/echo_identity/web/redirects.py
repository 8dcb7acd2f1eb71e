"""Same-origin redirect targets, so ``next`` parameters cannot become open redirects."""

from __future__ import annotations

from urllib.parse import urlsplit


def safe_next(target: str | None, default: str = "/account") -> str:
    """``target`` if it is a path on this site, else ``default``.

    Accepted: a path starting with one ``/`` (query allowed). Refused: absolute and
    scheme-relative URLs (``//evil``), backslash tricks (``/\\evil``), control characters.
    """
    if not target or len(target) > 2048 or not target.startswith("/"):
        return default
    if target.startswith(("//", "/\\")) or any(ord(c) < 32 or c == "\\" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
