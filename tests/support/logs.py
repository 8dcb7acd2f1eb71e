"""Server logs of in-process apps: the application's own redacting JSON chain, one log per server.

Logging is configured once per process (as ``echo_identity.wsgi`` does for a worker) with
:func:`echo_identity.logs.configure_logging`; only the final handler differs: a record emitted
while a thread is inside :func:`capture_into` (an in-process server answering a request) is
appended, rendered, to that server's lines; any other record goes to ``sys.stderr`` as looked up
at emit time, so pytest's capture shows it with the test.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from echo_identity.logs import configure_logging

_routes = threading.local()


class _RoutingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            lines: list[str] | None = getattr(_routes, "lines", None)
            if lines is not None:
                lines.append(line)
            else:
                sys.stderr.write(line + "\n")
        except Exception:  # a log line must never break the request that logged it
            self.handleError(record)


def install_test_logging() -> None:
    """(Re)install the redacting JSON chain with the routing handler at the root logger."""
    configure_logging("INFO", "json")
    root = logging.getLogger()
    rendered = root.handlers[0].formatter
    handler = _RoutingHandler()
    handler.setFormatter(rendered)
    root.handlers[:] = [handler]


@contextmanager
def capture_into(lines: list[str]) -> Iterator[None]:
    """Route this thread's log records to ``lines`` for the duration of the block."""
    previous = getattr(_routes, "lines", None)
    _routes.lines = lines
    try:
        yield
    finally:
        _routes.lines = previous
