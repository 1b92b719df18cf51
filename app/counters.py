"""The site's counters: their registry (codes and recount queries) and the engine's
Flask extension that serves them (``counters.init_app(app)`` in ``create_app``)."""

from __future__ import annotations

from engine import Counter, Registry, ViewPolicy
from engine.flask import FlaskCounters


def _count(table: str, key: str, where: str = "") -> str:
    """Recount query: ``(id, count)`` of rows of ``table`` whose ``key`` is in ``:ids``."""
    return (
        f"SELECT {key}, count(*) FROM {table} "
        f"WHERE {key} = ANY(CAST(:ids AS bigint[])){where} GROUP BY {key}"
    )


def _actions(target_type: str, action_type: str) -> str:
    where = f" AND target_type = '{target_type}' AND action_type = '{action_type}'"
    return _count("user_actions", "target_id", where)


# Views follow the view policy (COUNTERS_VIEW_POLICY): a visitor counts once per window,
# crawlers into bot_view_count, an author's own views not at all; unique_viewers is the
# HyperLogLog estimate the flush keeps up to date (engine/policy.py, engine/uniques.py).
VIEWS = ViewPolicy(bots="bot_view_count", uniques="unique_viewers")

# Codes are stored in every pending Redis field: never rename or reuse one.
REGISTRY = Registry(
    [
        # views keep hourly buckets and 24h / 7d totals: /stats and /trending
        Counter("posts", "view_count", "pv", policy=VIEWS, trending=True),
        Counter("posts", "bot_view_count", "pb"),
        Counter("posts", "likes_count", "pl", _actions("post", "like")),
        Counter("posts", "collects_count", "pc", _actions("post", "collect")),
        Counter("posts", "shares_count", "ps", _actions("post", "share")),
        Counter("posts", "comments_count", "pm", _count("post_comments", "post_id")),
        Counter("articles", "view_count", "av", policy=VIEWS, trending=True),
        Counter("articles", "bot_view_count", "ab"),
        Counter("articles", "likes_count", "al", _actions("article", "like")),
        Counter("articles", "collects_count", "ac", _actions("article", "collect")),
        Counter("articles", "shares_count", "as", _actions("article", "share")),
        Counter("articles", "comments_count", "am", _count("comments", "article_id")),
        Counter("comments", "likes_count", "cl", _count("comment_likes", "comment_id")),
        Counter(
            "post_comments", "likes_count", "ql", _count("post_comment_likes", "post_comment_id")
        ),
    ]
)


counters = FlaskCounters(REGISTRY)
