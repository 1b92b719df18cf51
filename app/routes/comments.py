"""Live like counts of comments: ``/api/post-comments/<id>`` and ``/api/comments/<id>``."""

from __future__ import annotations

from flask import Blueprint

from ..counters import counters
from ..errors import not_found

bp = Blueprint("comments", __name__, url_prefix="/api")


def _likes(table: str, row_id: int) -> dict:
    counts = counters.read(table, [row_id]).get(row_id)
    if counts is None:
        raise not_found("comment")
    return {"likes_count": counts["likes_count"]}


@bp.get("/post-comments/<id:row_id>/counts")
def post_comment_counts(row_id: int):
    return _likes("post_comments", row_id)


@bp.get("/comments/<id:row_id>/counts")
def comment_counts(row_id: int):
    return _likes("comments", row_id)
