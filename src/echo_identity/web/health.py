"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from echo_identity.db import current_database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and answering; checks nothing else."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready to serve: the database answers. 503 otherwise, so load balancers drain us."""
    if current_database().ping():
        return jsonify(status="ready"), 200
    return jsonify(status="unavailable", error="database_unavailable"), 503
