"""Pages for people: the home page, the trending lists, one page per post or article.

A page counts no view: its script sends ``POST /api/<kind>/<id>/view`` once the page is
visible (app/static/site.js), so prefetchers, crawlers and link previews that run no
script count nothing.
"""

from __future__ import annotations

import re
from datetime import timezone

from flask import Blueprint, current_app, render_template, request
from markupsafe import Markup, escape

from engine import TRENDING_WINDOWS, BufferUnavailable, StoreUnavailable, UnknownWindow
from engine.flask.visitors import remember_visitor

from .. import content
from ..counters import counters
from ..errors import page_error, page_unavailable
from ..kinds import ARTICLES, KINDS, POSTS, Kind

bp = Blueprint("pages", __name__)

HOME_ITEMS = 10  # newest posts, and newest articles, on the home page
TRENDING_ITEMS = 20  # per kind on /trending

# Scripts, styles and images from this origin only; nothing inline, no framing.
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# The counts a page shows, in order, with their labels (a post's ``counts`` keys).
COUNT_LABELS = (
    ("view_count", "views"),
    ("likes_count", "likes"),
    ("collects_count", "collects"),
    ("shares_count", "shares"),
    ("comments_count", "comments"),
    ("unique_viewers", "readers"),
)


@bp.record_once
def _tidy_templates(state) -> None:
    state.app.jinja_env.trim_blocks = True  # no blank lines where a block tag stood
    state.app.jinja_env.lstrip_blocks = True


@bp.app_template_filter("paragraphs")
def paragraphs(text: str) -> Markup:
    """Escaped text as ``<p>`` per blank-line-separated block, ``<br>`` per line break."""
    blocks = [b.strip() for b in PARAGRAPH_BREAK.split(text.replace("\r\n", "\n"))]
    return Markup("").join(
        Markup("<p>{}</p>").format(Markup("<br>").join(escape(line) for line in b.split("\n")))
        for b in blocks
        if b
    )


@bp.app_template_filter("utc")
def utc(dt) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("iso")
def iso(dt) -> str:
    return dt.astimezone(timezone.utc).isoformat()


@bp.after_app_request
def _policy(response):
    if response.mimetype == "text/html":  # pages, error pages included
        response.headers.setdefault("Content-Security-Policy", CSP)
    return response


@bp.errorhandler(BufferUnavailable)
@bp.errorhandler(StoreUnavailable)
def _unavailable(exc: Exception):
    current_app.logger.warning("counter backend unavailable: %s", exc)
    return page_unavailable()


@bp.get("/")
def home():
    """The newest posts and articles with their live counts: per kind, one SQL statement
    for the list, then one ``counters.read``."""
    lists = []
    for kind in KINDS:
        rows = content.newest(kind, HOME_ITEMS)
        counts = counters.read(kind.table, [r.id for r in rows]) if rows else {}
        lists.append((kind, [(r, counts[r.id]) for r in rows if r.id in counts]))
    remember_visitor()
    return render_template("home.html", lists=lists, labels=COUNT_LABELS)


@bp.get("/trending")
def trending():
    """The most viewed posts and articles of the window (24h or 7d), ordered as
    ``GET /api/<kind>/trending``, pending views included."""
    window = request.args.get("window", TRENDING_WINDOWS[0])
    try:
        lists = [(kind, content.trending(kind, window, TRENDING_ITEMS)) for kind in KINDS]
    except UnknownWindow:
        message = f"There is no such window. Pick one of {', '.join(TRENDING_WINDOWS)}."
        return page_error(404, "No such window", message)
    return render_template(
        "trending.html", lists=lists, window=window, windows=TRENDING_WINDOWS, labels=COUNT_LABELS
    )


def _item(kind: Kind, row_id: int):
    """One Redis round trip and one SQL statement, as the JSON read, counting nothing (its
    sparkline comes from ``/stats``, fetched by the page: app/static/sparkline.js)."""
    found = content.read(kind, row_id)
    if found is None:
        what = kind.target_type
        message = f"There is no {what} with this number. It may have been deleted."
        return page_error(404, f"No such {what}", message)
    row, counts = found
    remember_visitor()  # the page's beacon then carries the visitor's vid cookie
    return render_template("item.html", kind=kind, row=row, counts=counts, labels=COUNT_LABELS)


@bp.get("/posts/<id:row_id>")
def post(row_id: int):
    return _item(POSTS, row_id)


@bp.get("/articles/<id:row_id>")
def article(row_id: int):
    return _item(ARTICLES, row_id)
