"""The blueprint builder shared by ``/api/posts`` and ``/api/articles``."""

from __future__ import annotations

from datetime import timezone

from flask import Blueprint, g, request

from engine import TargetMissing, UnknownWindow

from .. import content
from ..auth import user_required
from ..counters import counters
from ..errors import ApiError, bad_request, not_found
from ..kinds import Kind
from ..payload import json_object, query_int, text
from ..viewers import view_visit

TITLE_CHARS = (1, 200)
CONTENT_CHARS = (0, 100_000)
COMMENT_CHARS = (1, 10_000)
PAGE_LIMIT = (1, 100)
PAGE_LIMIT_DEFAULT = 20
TRENDING_LIMIT = (1, 100)
TRENDING_LIMIT_DEFAULT = 20
DEFAULT_WINDOW = "24h"
# A page stops once its items' text reaches this many bytes (100 posts of 100k
# characters would otherwise be a 40 MB answer); ``next`` then continues after it.
PAGE_MAX_TEXT_BYTES = 1024 * 1024


def iso(dt) -> str:
    return dt.astimezone(timezone.utc).isoformat()


def item_json(row, counts: dict[str, int]) -> dict:
    return {
        "id": row.id,
        "title": row.title,
        "content": row.content,
        "author_id": row.author_id,
        "created_at": iso(row.created_at),
        "counts": counts,
    }


def series_json(row_id: int, series) -> dict:
    return {
        "id": row_id,
        "window": series.window,
        "step": series.step,
        "views": series.total,
        "series": [{"start": iso(start), "views": n} for start, n in series.buckets],
    }


def window_arg() -> str:
    return request.args.get("window", DEFAULT_WINDOW)


def comment_json(kind: Kind, row) -> dict:
    return {
        "id": row.id,
        kind.comment_fk: getattr(row, kind.comment_fk),
        "author_id": row.author_id,
        "content": row.content,
        "created_at": iso(row.created_at),
        "likes_count": 0,
    }


def within_budget(rows: list, more: bool) -> tuple[list, bool]:
    """The first rows whose text fits in PAGE_MAX_TEXT_BYTES (at least one), and whether
    more follow."""
    used = 0
    for i, row in enumerate(rows):
        used += len(row.title.encode()) + len(row.content.encode())
        if used > PAGE_MAX_TEXT_BYTES and i > 0:
            return rows[:i], True
    return rows, more


def content_blueprint(kind: Kind) -> Blueprint:
    bp = Blueprint(kind.table, __name__, url_prefix=f"/api/{kind.table}")
    what = kind.target_type

    @bp.post("")
    @user_required
    def create():
        data = json_object()
        title = text(data, "title", *TITLE_CHARS)
        body = text(data, "content", *CONTENT_CHARS)
        row = content.create(kind, g.user_id, title, body)
        return item_json(row, content.zero_counts()), 201

    @bp.get("")
    def index():
        limit = query_int("limit", PAGE_LIMIT_DEFAULT, *PAGE_LIMIT)
        after = query_int("after", None, 1, 2**63 - 1)
        rows, more = content.page(kind, limit, after)
        rows, more = within_budget(rows, more)
        counts = counters.read(kind.table, [r.id for r in rows]) if rows else {}
        items = [item_json(r, counts[r.id]) for r in rows if r.id in counts]
        return {"items": items, "next": rows[-1].id if more else None}

    @bp.get("/trending")
    def trending():
        limit = query_int("limit", TRENDING_LIMIT_DEFAULT, *TRENDING_LIMIT)
        window = window_arg()
        try:
            ranked = content.trending(kind, window, limit)
        except UnknownWindow as exc:
            raise bad_request(str(exc), "bad_window") from None
        items = [{**item_json(row, counts), "window_views": n} for row, counts, n in ranked]
        return {"window": window, "items": items}

    @bp.get("/<id:row_id>/stats")
    def stats(row_id: int):
        try:
            series = counters.window_series(kind.views, row_id, window_arg())
        except UnknownWindow as exc:
            raise bad_request(str(exc), "bad_window") from None
        if series is None:
            raise not_found(what)
        return series_json(row_id, series)

    @bp.get("/<id:row_id>")
    def show(row_id: int):
        if request.method == "HEAD":  # HEAD is safe: it counts no view
            found = content.get_with_counts(kind, row_id)
        else:
            found = content.view_and_read(kind, row_id, view_visit(kind, row_id))
        if found is None:
            raise not_found(what)
        return item_json(*found)

    @bp.post("/<id:row_id>/view")
    def view(row_id: int):
        if not counters.view(kind.views, row_id, view_visit(kind, row_id)):
            raise not_found(what)
        return "", 204

    @bp.get("/<id:row_id>/counts")
    def counts(row_id: int):
        found = counters.read(kind.table, [row_id]).get(row_id)
        if found is None:
            raise not_found(what)
        return found

    @bp.patch("/<id:row_id>")
    @user_required
    def edit(row_id: int):
        data = json_object()
        limits = {"title": TITLE_CHARS, "content": CONTENT_CHARS}
        unknown = sorted(set(data) - set(limits))
        if unknown or not data:
            raise bad_request("give title and/or content, nothing else", "bad_fields")
        changes = {name: text(data, name, *limits[name]) for name in sorted(data)}
        try:
            edited = content.edit(kind, row_id, g.user_id, changes)
        except content.NotAuthor:
            raise ApiError(403, "forbidden", f"only its author may edit this {what}") from None
        found = content.read(kind, row_id) if edited else None
        if found is None:
            raise not_found(what)
        return item_json(*found)

    @bp.delete("/<id:row_id>")
    @user_required
    def delete(row_id: int):
        try:
            deleted = content.delete(kind, row_id, g.user_id)
        except content.NotAuthor:
            raise ApiError(403, "forbidden", f"only its author may delete this {what}") from None
        if not deleted:
            raise not_found(what)
        return "", 204

    @bp.post("/<id:row_id>/comments")
    @user_required
    def comment(row_id: int):
        body = text(json_object(), "content", *COMMENT_CHARS)
        try:
            row = content.add_comment(kind, row_id, g.user_id, body)
        except TargetMissing:
            raise not_found(what) from None
        return comment_json(kind, row), 201

    return bp
