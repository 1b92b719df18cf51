"""The operators' dashboard, a page of the optional admin blueprint family: views per
minute, pending counters and flush lag over the last hour as live charts, and the last
flushes and reconciles. Register it where it should live:

    app.register_blueprint(
        counters.dashboard_blueprint(token=lambda: current_app.config.get("ADMIN_TOKEN")),
        url_prefix="/admin/dashboard",
    )

``token()`` gives the admin token (None or "": the dashboard is disabled, every address
of it is a 404). It is entered once in the page's form (a POST, compared in constant
time); the browser then holds a signed session cookie (Flask's ``session``: the app needs
a ``SECRET_KEY``), never the token, and the token never appears in a URL or a page. The
session holds a fingerprint of the token, so a new token signs every browser out, and
the time of the sign-in, which lasts SESSION_MAX_AGE_S.

    GET  ""          the charts when signed in, else the form
    POST ""          sign in (form field ``token``): 303 to GET, or the form with a 401
    POST /sign-out   forget the session: 303 to GET
    GET  /data       the JSON the page polls (401 JSON without the session)

The charts use uPlot (MIT, vendored in ``static/``, its licence beside it); no build step.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

SESSION_KEY = "counters_dashboard"
SESSION_MAX_AGE_S = 12 * 3600  # a sign-in lasts a working day, whatever the cookie says
POLL_MS = 5_000  # how often the page asks for new data
MINUTES = 60  # the charts' span
RUNS_SHOWN = 10  # rows of the last flushes and reconciles tables
NO_STORE = {"Cache-Control": "no-store"}


def fingerprint(token: str) -> str:
    """What the session keeps: a digest that names the token without revealing it."""
    return hmac.new(token.encode(), b"counters-dashboard-session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def _counters():
    return current_app.extensions["counters"].counters


def dashboard_blueprint(
    token: Callable[[], str | None],
    *,
    views: Sequence[str] | None = None,
    home_url: str = "/",
    name: str = "counters_dashboard",
) -> Blueprint:
    """The dashboard (see the module docstring). ``views`` are the counters
    (``"table.column"``) whose increments the first chart adds up as views; default:
    every counter. ``home_url`` is the page's link back to the site."""
    bp = Blueprint(
        name, __name__, template_folder="templates", static_folder="static",
        static_url_path="/static",
    )  # fmt: skip

    @bp.record_once
    def _lax_cookie(state) -> None:
        # browsers treat an unset SameSite as Lax; the dashboard says so explicitly
        if state.app.config.get("SESSION_COOKIE_SAMESITE") is None:
            state.app.config["SESSION_COOKIE_SAMESITE"] = "Lax"

    def configured() -> str | None:
        value = token()
        if value and not current_app.secret_key:
            raise RuntimeError("the dashboard signs its session cookie: set SECRET_KEY")
        return value or None

    def expected() -> str:
        return configured() or abort(404)

    def signed_in(value: str) -> bool:
        kept = session.get(SESSION_KEY)
        if not isinstance(kept, dict) or not isinstance(kept.get("at"), (int, float)):
            return False
        fresh = 0 <= time.time() - kept["at"] <= SESSION_MAX_AGE_S
        return fresh and _same(str(kept.get("fp", "")), fingerprint(value))

    def sign_in_form(error: str | None, status: int):
        html = render_template("counters/sign_in.html", error=error, home_url=home_url)
        return html, status, NO_STORE

    @bp.get("")
    def page():
        if not signed_in(expected()):
            return sign_in_form(None, 200)
        html = render_template(
            "counters/dashboard.html",
            scope=_counters().scope,
            poll_ms=POLL_MS,
            minutes=MINUTES,
            views_label="views" if views else "increments",
            home_url=home_url,
        )
        return html, 200, NO_STORE

    @bp.post("")
    def sign_in():
        value = expected()
        if not _same(request.form.get("token", ""), value):
            return sign_in_form("That is not the admin token.", 401)
        session.clear()
        session[SESSION_KEY] = {"fp": fingerprint(value), "at": int(time.time())}
        return redirect(url_for(".page"), 303)

    @bp.post("/sign-out")
    def sign_out():
        expected()
        session.pop(SESSION_KEY, None)
        return redirect(url_for(".page"), 303)

    @bp.get("/data")
    def data():
        value = configured()
        if value is None:
            return _json_error(404, "not_found", "the dashboard is disabled")
        if not signed_in(value):
            return _json_error(401, "unauthorized", "sign in on the dashboard page first")
        return jsonify(dashboard_data(_counters(), views)), 200, NO_STORE

    return bp


def _json_error(status: int, code: str, message: str):
    response = jsonify(error=code, message=message)
    response.status_code = status
    response.headers.update(NO_STORE)
    return response


def dashboard_data(counters, views: Sequence[str] | None = None) -> dict:
    """What the page polls, from the engine's public API: the activity columns (views
    summed over ``views``, default every counter; a flush lag of 0 when nothing is
    pending), the report and the last runs."""
    activity = counters.activity(MINUTES)
    chosen = [v for n, v in activity["accepted"].items() if views is None or n in views]
    per_minute = [
        None if any(c[i] is None for c in chosen) else round(sum(c[i] for c in chosen), 2)
        for i in range(len(activity["t"]))
    ]
    report = counters.report()
    runs = counters.recent_runs(RUNS_SHOWN)
    return {
        "scope": counters.scope,
        "series": {
            "t": activity["t"],
            "views": per_minute,
            "pending": activity["pending"],
            "lag_s": [lag or 0.0 for lag in activity["lag_s"]],  # nothing pending: 0
        },
        "pending": report["pending"],
        "oldest_pending_age_s": report["oldest_pending_age_s"],
        "last_flush": report["last_flush"],
        "totals": report["totals"],
        "flushes": runs["flush"],
        "reconciles": runs["reconcile"],
    }
