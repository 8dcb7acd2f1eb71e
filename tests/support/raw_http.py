"""HTTP/1.1 over a bare socket: requests whose bytes no client library would send.

httpx (rightly) refuses to put a NUL or bytes that are not UTF-8 into a URL or a header; an
attacker's client does not. :func:`send_raw` writes the request exactly as given.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.support.server import LiveServer


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def send_raw(
    server: LiveServer,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    timeout: float = 20,
) -> RawResponse:
    """Send one request (``Connection: close``) and read the whole answer."""
    url = urlsplit(server.base_url)
    lines = [
        method + b" " + target + b" HTTP/1.1",
        b"Host: " + url.netloc.encode(),
        b"Connection: close",
        b"Content-Length: " + str(len(body)).encode(),
        *(name + b": " + value for name, value in headers or []),
    ]
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding", "").lower() == "chunked":
        payload = _dechunk(payload)
    return RawResponse(int(status_line.split()[1]), parsed, payload)
