"""The Flask side of visitors (engine/visitors.py): a request's :class:`Visit`, and the
``vid`` cookie (``Max-Age`` one year, ``SameSite=Lax``, ``HttpOnly``, ``Path=/``,
``Secure`` over HTTPS), set on the response when the request had none.

    from engine.flask.visitors import visit, remember_visitor

    counters.view("posts.view_count", post_id, visit(user_id=user_id, author_id=author_id))

The client address is ``request.remote_addr``: behind a reverse proxy, wrap the app in
Werkzeug's ``ProxyFix`` with the number of trusted proxies, never read
``X-Forwarded-For`` yourself.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request

from ..policy import RAW, Visit
from ..visitors import VID_COOKIE, VID_MAX_AGE_S, new_vid, valid_vid, visit_of

_NEW_VID = "_counters_new_vid"


def salt() -> str:
    """COUNTERS_VISITOR_SALT, else the app's SECRET_KEY, else the counter scope."""
    config = current_app.config
    return str(
        config.get("COUNTERS_VISITOR_SALT") or config.get("SECRET_KEY") or config["COUNTERS_SCOPE"]
    )


def remember_visitor() -> str | None:
    """The request's valid ``vid`` cookie; when it has none, one is set on the response
    (and None returned: this request's visitor is the address + User-Agent hash). Sets
    nothing when COUNTERS_VIEW_POLICY is ``raw``."""
    vid = request.cookies.get(VID_COOKIE)
    if not policy_on():
        return vid if valid_vid(vid) else None
    if valid_vid(vid):
        return vid
    if _NEW_VID not in g:
        setattr(g, _NEW_VID, new_vid())
    return None


def policy_on() -> bool:
    """Whether the app counts views under the view policy (COUNTERS_VIEW_POLICY)."""
    return current_app.config["COUNTERS_VIEW_POLICY"] != RAW


def visit(user_id: int | None = None, author_id: int | None = None) -> Visit | None:
    """The current request's visit: ``user_id`` the signed-in viewer (None: anonymous),
    ``author_id`` the row's author when the caller knows it (an author's own view is
    held back). Sets the ``vid`` cookie when the request has none. None (and no cookie)
    when COUNTERS_VIEW_POLICY is ``raw``: every view counts."""
    if not policy_on():
        return None
    vid = remember_visitor()
    return visit_of(
        request.headers.get("User-Agent", ""),
        request.remote_addr or "",
        salt(),
        vid=vid,
        new_vid=g.get(_NEW_VID),
        user_id=user_id,
        author_id=author_id,
    )


def _set_cookie(response):
    vid = g.pop(_NEW_VID, None)
    if vid is not None and response.status_code < 400:  # a refused request leaves nothing
        response.set_cookie(
            VID_COOKIE,
            vid,
            max_age=VID_MAX_AGE_S,
            path="/",
            samesite="Lax",
            httponly=True,
            secure=request.is_secure,
        )
    return response


def init_visitors(app: Flask) -> None:
    """Set the ``vid`` cookie on responses whose request asked for one."""
    app.after_request(_set_cookie)
