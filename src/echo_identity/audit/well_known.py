"""``GET /.well-known/audit-keys``: the public audit keys that checkpoint signatures verify with,
and the app-level wiring of the audit pseudonyms."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from echo_identity.audit import pseudonyms
from echo_identity.audit.keys import audit_jwks
from echo_identity.config import Settings
from echo_identity.db import current_database

bp = Blueprint("audit_keys", __name__)


@bp.get("/.well-known/audit-keys")
def audit_keys() -> Response:
    """The JWK Set of audit signing keys (Ed25519, ``use: sig``); empty before the first seal."""
    with current_database().read_session() as session:
        response = jsonify(audit_jwks(session))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def init_app(app: Flask, settings: Settings) -> None:
    pseudonyms.configure(settings.secret_key_bytes())
    app.register_blueprint(bp)
