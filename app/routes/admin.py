"""``/api/admin/counters``: flush and reconcile now, backlog stats (``ADMIN_TOKEN``)."""

from __future__ import annotations

from flask import Blueprint

from .. import maintenance
from ..auth import admin_required

bp = Blueprint("admin", __name__, url_prefix="/api/admin/counters")


@bp.post("/flush")
@admin_required
def flush():
    return maintenance.flush()


@bp.post("/reconcile")
@admin_required
def reconcile():
    return maintenance.reconcile()


@bp.get("/stats")
@admin_required
def stats():
    return maintenance.stats()
