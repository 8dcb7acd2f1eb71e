"""A request the input screen refuses (``web.hygiene``) recorded as what it stands for at its
path: a refused ``POST /login`` is a failed sign-in, a refused ``POST /token`` a failed token
request. The domain that owns the path calls :func:`audit_refusals_of` when it registers its
routes; the screen then calls back, and the refusal is counted per window
(:func:`~echo_identity.audit.refusals.record_refusal`) and committed before the answer."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from echo_identity.audit.events import EventType
from echo_identity.audit.refusals import record_refusal
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.web import hygiene
from echo_identity.web.context import request_session, service


def audit_refusals_of(
    app: Flask, path: str, event_type: EventType, also: Callable[[str], None] | None = None
) -> None:
    """Make a screened-out ``POST path`` of ``app`` a recorded ``event_type`` (no user,
    nothing that was typed); ``also`` is called first with the client address (the token
    endpoint spends its failure limit there)."""

    def record(refusal: hygiene.ScreenRefusal) -> None:
        if also is not None:
            also(refusal.remote_addr)
        session = request_session()
        record_refusal(
            session,
            event_type,
            reason=refusal.code,
            window_seconds=service(Settings).audit_refusal_window,
            context=refusal.context,
            details={"input": refusal.part, "defect": refusal.defect},
            audit=service(AuditTrail),
        )
        session.commit()

    hygiene.on_refusal(app, path, record)
