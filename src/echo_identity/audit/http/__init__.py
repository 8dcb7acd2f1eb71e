"""The audit trail's HTTP surface; :func:`echo_identity.audit.http.app.init_app` registers it."""
