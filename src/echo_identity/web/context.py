"""The request facts that audit events carry, captured once in the web layer."""

from __future__ import annotations

from flask import request

from echo_identity.audit.service import RequestContext
from echo_identity.web.request_id import current_request_id


def request_context() -> RequestContext:
    """IP (after the trusted proxy hops), user agent and request id of the current request."""
    return RequestContext(
        ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
        request_id=current_request_id() or None,
    )
