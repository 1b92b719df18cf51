"""``/api/openapi.json``."""

from __future__ import annotations

from flask import Blueprint

from ..openapi import document

bp = Blueprint("docs", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def openapi():
    return document()
