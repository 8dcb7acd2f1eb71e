"""A plain, framework-free view of one audit event, handed to the pure rules and mappings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class EventRecord:
    """One row of ``audit_events`` as the detection rules and the OCSF mapping see it.

    ``actor`` and ``subject`` are opaque strings (user pseudonyms or client ids).
    """

    id: int
    occurred_at: datetime
    event_type: str
    outcome: str = "success"
    severity: str = "info"
    actor: str | None = None
    subject: str | None = None
    client_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    token_fingerprint: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
