"""``/api/admin/counters``: flush and reconcile now, backlog stats, the beat schedule
(``ADMIN_TOKEN``)."""

from __future__ import annotations

from flask import Blueprint, current_app

from .. import maintenance, schedules
from ..auth import admin_required
from ..errors import bad_request
from ..payload import json_object

bp = Blueprint("admin", __name__, url_prefix="/api/admin/counters")

# body field -> schedule kind
SCHEDULE_FIELDS = {"flush_interval": "flush", "reconcile_interval": "reconcile"}


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


@bp.get("/schedule")
@admin_required
def schedule():
    return schedules.describe(current_app.extensions["celery"], current_app.config)


@bp.put("/schedule")
@admin_required
def set_schedule():
    """Set the flush and/or reconcile interval (seconds); a running beat follows."""
    data = json_object()
    unknown = sorted(set(data) - set(SCHEDULE_FIELDS))
    if unknown or not data:
        fields = " and/or ".join(SCHEDULE_FIELDS)
        raise bad_request(f"expected {fields}" + (f", not {', '.join(unknown)}" if unknown else ""))
    wanted = {}
    for field, kind in SCHEDULE_FIELDS.items():
        if field in data:
            try:
                wanted[kind] = schedules.validate(kind, data[field])
            except schedules.BadInterval as exc:
                raise bad_request(str(exc)) from None
    celery = current_app.extensions["celery"]
    for kind, seconds in wanted.items():
        schedules.set_interval(celery, kind, seconds)
    return schedules.describe(celery, current_app.config)
