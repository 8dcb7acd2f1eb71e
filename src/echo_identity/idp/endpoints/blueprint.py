"""The blueprint every protocol endpoint module registers its route on."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("idp", __name__)
