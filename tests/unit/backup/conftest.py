"""Fixtures for the backup unit tests: moto in place of AWS is the key tests' own."""

from __future__ import annotations

from tests.unit.keys.conftest import aws

__all__ = ["aws"]
