"""The optional admin blueprint: flush and reconcile now, the engine's report, and the
RedBeat schedule (read and change at runtime; needs ``app.extensions["celery"]``).

    app.register_blueprint(counters.admin_blueprint(auth=admin_required),
                           url_prefix="/api/admin/counters")

Every error it returns is ``{"error": "<code>", "message": "<text>"}`` JSON.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException

from .. import intervals

# body field of PUT /schedule -> schedule kind
SCHEDULE_FIELDS = {
    "flush_interval": "flush",
    "reconcile_interval": "reconcile",
    "retention_interval": "retention",
}


def _json_error(exc: HTTPException):
    response = jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description)
    response.status_code = exc.code or 500
    return response


def _counters():
    return current_app.extensions["counters"].counters


def _schedule():
    from ..celery import schedule  # the [celery] extra

    celery = current_app.extensions.get("celery")
    if celery is None:
        raise RuntimeError('no Celery app in app.extensions["celery"]')
    return schedule, celery


def _body() -> dict:
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:  # nested deeper than the parser goes
        data = None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def admin_blueprint(auth: Callable | None = None, name: str = "counters_admin") -> Blueprint:
    """The blueprint; ``auth`` (a view decorator) guards every endpoint."""
    bp = Blueprint(name, __name__)
    bp.register_error_handler(HTTPException, _json_error)
    guard = auth or (lambda view: view)

    def route(rule: str, method: str):
        # endpoints named here, so an ``auth`` decorator need not keep the view's name
        def register(view):
            bp.add_url_rule(rule, view.__name__, guard(view), methods=[method])
            return view

        return register

    @route("/flush", "POST")
    def flush():
        counters = _counters()
        counters.ensure_index()
        return counters.flush_all().as_dict()

    @route("/reconcile", "POST")
    def reconcile():
        return _counters().reconcile().as_dict()

    @route("/stats", "GET")
    def stats():
        return _counters().report()

    @route("/schedule", "GET")
    def schedule():
        module, celery = _schedule()
        return module.describe(celery, current_app.config)

    @route("/schedule", "PUT")
    def set_schedule():
        """Set the flush, reconcile and/or retention interval (seconds); a running beat
        follows."""
        data = _body()
        unknown = sorted(set(data) - set(SCHEDULE_FIELDS))
        if unknown or not data:
            fields = " and/or ".join(SCHEDULE_FIELDS)
            raise BadRequest(
                f"expected {fields}" + (f", not {', '.join(unknown)}" if unknown else "")
            )
        wanted = {}
        for field, kind in SCHEDULE_FIELDS.items():
            if field in data:
                try:
                    wanted[kind] = intervals.validate(kind, data[field])
                except intervals.BadInterval as exc:
                    raise BadRequest(str(exc)) from None
        module, celery = _schedule()
        for kind, seconds in wanted.items():
            module.set_interval(celery, kind, seconds)
        return module.describe(celery, current_app.config)

    return bp
