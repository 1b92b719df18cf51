"""The app's counters: their registry (codes and recount queries) and the one
``engine.Counters`` each Flask app owns."""

from __future__ import annotations

from collections.abc import Mapping

import redis
import redis.cluster
import sqlalchemy as sa
from flask import current_app

from engine import Counter, Counters, Registry

REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 10.0


def _count(table: str, key: str, where: str = "") -> str:
    """Recount query: ``(id, count)`` of rows of ``table`` whose ``key`` is in ``:ids``."""
    return (
        f"SELECT {key}, count(*) FROM {table} "
        f"WHERE {key} = ANY(CAST(:ids AS bigint[])){where} GROUP BY {key}"
    )


def _actions(target_type: str, action_type: str) -> str:
    where = f" AND target_type = '{target_type}' AND action_type = '{action_type}'"
    return _count("user_actions", "target_id", where)


# Codes are stored in every pending Redis field: never rename or reuse one.
REGISTRY = Registry(
    [
        Counter("posts", "view_count", "pv"),
        Counter("posts", "likes_count", "pl", _actions("post", "like")),
        Counter("posts", "collects_count", "pc", _actions("post", "collect")),
        Counter("posts", "shares_count", "ps", _actions("post", "share")),
        Counter("posts", "comments_count", "pm", _count("post_comments", "post_id")),
        Counter("articles", "view_count", "av"),
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


def redis_client(url: str, cluster: bool = False):
    options = {
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
    }
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def build_counters(config: Mapping, sql: sa.Engine) -> Counters:
    client = redis_client(config["COUNTERS_REDIS_URL"], config["COUNTERS_REDIS_CLUSTER"])
    return Counters(
        client,
        sql,
        REGISTRY,
        shards=config["COUNTERS_SHARDS"],
        prefix=config["COUNTERS_PREFIX"],
        flush_threads=config["COUNTERS_FLUSH_THREADS"],
    )


def get_counters() -> Counters:
    """The current app's counters (needs an app context)."""
    return current_app.extensions["counters"]
