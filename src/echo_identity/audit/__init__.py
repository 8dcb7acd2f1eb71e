"""Audit trail: typed security events recorded through one function."""
