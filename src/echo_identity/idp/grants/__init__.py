"""Authlib grants, one per module; persistence hooks only, the protocol stays Authlib's."""
