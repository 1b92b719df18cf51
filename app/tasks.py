"""Celery tasks. They take ids, never ORM objects, and run inside the app context.

``flush_counters`` and ``reconcile_counters`` are scheduled by RedBeat. The recount
tasks keep the original system's names and correct one row alongside its pending
deltas. ``update_post_view_count`` is the original one-task-per-view path, kept only
so benchmarks can compare against it: no route sends it.
"""

from __future__ import annotations

import sqlalchemy as sa
from celery import shared_task

from . import maintenance
from .celery_utils import RETRY_KWARGS
from .extensions import db

POST_RECOUNTS = [
    "posts.likes_count",
    "posts.collects_count",
    "posts.shares_count",
    "posts.comments_count",
]
ARTICLE_RECOUNTS = [name.replace("posts.", "articles.") for name in POST_RECOUNTS]


@shared_task(bind=True, **RETRY_KWARGS)
def flush_counters(self) -> dict:
    """Apply every pending delta to Postgres (exactly once)."""
    return maintenance.flush()


@shared_task(bind=True, **RETRY_KWARGS)
def reconcile_counters(self) -> dict:
    """Exact recount of every counter that has a source of truth."""
    return maintenance.reconcile()


@shared_task(bind=True, **RETRY_KWARGS)
def update_post_counts(self, post_id: int) -> dict:
    return maintenance.reconcile(POST_RECOUNTS, [post_id])


@shared_task(bind=True, **RETRY_KWARGS)
def update_article_counts(self, article_id: int) -> dict:
    return maintenance.reconcile(ARTICLE_RECOUNTS, [article_id])


@shared_task(bind=True, **RETRY_KWARGS)
def update_post_comment_likes_count(self, comment_id: int) -> dict:
    return maintenance.reconcile(["post_comments.likes_count"], [comment_id])


@shared_task(bind=True, **RETRY_KWARGS)
def update_article_comment_likes_count(self, comment_id: int) -> dict:
    return maintenance.reconcile(["comments.likes_count"], [comment_id])


@shared_task(bind=True, **RETRY_KWARGS)
def update_post_view_count(self, post_id: int) -> bool:
    """Legacy: one UPDATE per view. True when the post exists."""
    result = db.session.execute(
        sa.text("UPDATE posts SET view_count = view_count + 1 WHERE id = :id"), {"id": post_id}
    )
    db.session.commit()
    return result.rowcount == 1
