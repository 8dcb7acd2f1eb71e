"""OpenID Connect provider: clients, grants, signing keys, protocol endpoints."""
