"""Audit events in OCSF shape (Open Cybersecurity Schema Framework 1.4) for SIEMs.

Sign-in and sign-out events map to **Authentication** (class_uid 3002, category_uid 3,
Identity & Access Management): activity 1 Logon, 2 Logoff. Every other event (tokens, vault,
keys, administration) maps to **API Activity** (class_uid 6003, category_uid 6, Application
Activity): activity 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other. ``type_uid`` is
``class_uid * 100 + activity_id``. People appear only as the pseudonyms stored on the event;
tokens only as their fingerprint. Pure: no Flask, no database.
"""

from __future__ import annotations

from typing import Any

from echo_identity.audit.events import EventType
from echo_identity.audit.records import EventRecord

OCSF_VERSION = "1.4.0"
AUTHENTICATION = 3002
API_ACTIVITY = 6003
_CATEGORY = {
    AUTHENTICATION: (3, "Identity & Access Management"),
    API_ACTIVITY: (6, "Application Activity"),
}
_CLASS_NAME = {AUTHENTICATION: "Authentication", API_ACTIVITY: "API Activity"}
_AUTH_ACTIVITY = {
    str(EventType.LOGIN_SUCCESS): (1, "Logon"),
    str(EventType.LOGIN_FAILURE): (1, "Logon"),
    str(EventType.LOGOUT): (2, "Logoff"),
}
# The last word of the event name says what happened to the API object.
_API_ACTIVITY = {
    "issued": (1, "Create"),
    "created": (1, "Create"),
    "added": (1, "Create"),
    "granted": (1, "Create"),
    "read": (2, "Read"),
    "introspected": (2, "Read"),
    "verified": (2, "Read"),
    "listed": (2, "Read"),
    "refreshed": (3, "Update"),
    "rotated": (3, "Update"),
    "revoked": (4, "Delete"),
    "expired": (4, "Delete"),
    "disabled": (4, "Delete"),
}
_SEVERITY = {"info": (1, "Informational"), "warning": (3, "Medium"), "high": (4, "High")}


def to_ocsf(event: EventRecord, product_version: str) -> dict[str, Any]:
    """The OCSF document for one audit event."""
    if event.event_type in _AUTH_ACTIVITY:
        class_uid = AUTHENTICATION
        activity_id, activity_name = _AUTH_ACTIVITY[event.event_type]
    else:
        class_uid = API_ACTIVITY
        verb = event.event_type.rsplit(".", 1)[-1]
        activity_id, activity_name = _API_ACTIVITY.get(verb, (99, "Other"))
    category_uid, category_name = _CATEGORY[class_uid]
    severity_id, severity = _SEVERITY.get(event.severity, (0, "Unknown"))
    succeeded = event.outcome == "success"
    document: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": _CLASS_NAME[class_uid],
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{_CLASS_NAME[class_uid]}: {activity_name}",
        "time": int(event.occurred_at.timestamp() * 1000),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1 if succeeded else 2,
        "status": "Success" if succeeded else "Failure",
        "message": event.event_type,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": str(event.id),
            "event_code": event.event_type,
            "product": {
                "name": "Echo Identity",
                "vendor_name": "Echo Identity",
                "version": product_version,
            },
            **({"correlation_uid": event.request_id} if event.request_id else {}),
        },
        "src_endpoint": {"ip": event.ip} if event.ip else {},
        "http_request": {"user_agent": event.user_agent} if event.user_agent else {},
        "unmapped": {
            "details": dict(event.details),
            **({"token_fingerprint": event.token_fingerprint} if event.token_fingerprint else {}),
        },
    }
    if not succeeded:
        error = event.details.get("error")
        document["status_detail"] = str(error) if error else event.outcome
    person = event.subject or event.actor
    if class_uid == AUTHENTICATION:
        document["user"] = {"uid": person} if person else {"type_id": 0, "type": "Unknown"}
        if event.client_id:
            document["service"] = {"uid": event.client_id}
    else:
        actor: dict[str, Any] = {}
        if event.actor or event.subject:
            actor["user"] = {"uid": event.actor or event.subject}
        if event.client_id:
            actor["app_uid"] = event.client_id
        document["actor"] = actor
        document["api"] = {
            "operation": event.event_type,
            "service": {"name": "echo-identity"},
            **({"request": {"uid": event.request_id}} if event.request_id else {}),
        }
        if event.subject and event.actor and event.subject != event.actor:
            document["resources"] = [{"uid": event.subject, "type": "user"}]
    return document
