"""``GET /.well-known/audit-keys``: the public audit keys that checkpoint signatures verify with."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from echo_identity.audit.keys import audit_jwks
from echo_identity.db import Database
from echo_identity.web.context import service

bp = Blueprint("audit_keys", __name__)


@bp.get("/.well-known/audit-keys")
def audit_keys() -> Response:
    """The JWK Set of audit signing keys (Ed25519, ``use: sig``); empty before the first seal."""
    with service(Database).read_session() as session:
        response = jsonify(audit_jwks(session))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
