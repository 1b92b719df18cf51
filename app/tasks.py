"""Celery tasks. They take ids, never ORM objects, and run inside the app context.

``flush_counters`` and ``reconcile_counters`` are scheduled by RedBeat. ``flush_counters``
finds the dirty shards in one Redis round trip; when they fill more than one group of
``COUNTERS_FLUSH_GROUP_SIZE`` it sends one ``flush_shards`` task per group, so several
workers flush at once, else it flushes them itself. The admin endpoint and the CLI keep
the synchronous ``Counters.flush_all``. The recount tasks keep the original system's
names and correct one row alongside its pending deltas. ``update_post_view_count`` is
the original one-task-per-view path, kept only so benchmarks can compare against it: no
route sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from celery import shared_task
from flask import current_app

from . import maintenance
from .celery_utils import RETRY_KWARGS
from .counters import get_counters
from .extensions import db
from .kinds import KINDS

log = logging.getLogger(__name__)

POST_RECOUNTS = [
    "posts.likes_count",
    "posts.collects_count",
    "posts.shares_count",
    "posts.comments_count",
]
ARTICLE_RECOUNTS = [name.replace("posts.", "articles.") for name in POST_RECOUNTS]


def groups_of(shards: Sequence[int], size: int) -> list[list[int]]:
    return [list(shards[i : i + size]) for i in range(0, len(shards), size)]


@shared_task(bind=True, **RETRY_KWARGS)
def flush_counters(self) -> dict:
    """Apply every pending delta to Postgres (exactly once).

    Dirty shards that fit in one group are flushed here (the result is their flush
    summary); more are sent as ``flush_shards`` tasks, one per group, to the queue this
    task came from, each expiring after one flush interval (the next flush supersedes
    it). The result then lists them: ``{"dispatched": [{"id", "shards"}, ...]}``.
    """
    counters = get_counters()
    counters.existence.ensure_loaded([k.table for k in KINDS])
    groups = groups_of(
        counters.buffer.dirty_shards(), current_app.config["COUNTERS_FLUSH_GROUP_SIZE"]
    )
    if len(groups) <= 1:
        return maintenance.flush(groups[0] if groups else [])
    queue = (self.request.delivery_info or {}).get("routing_key")
    expires_s = current_app.config["COUNTERS_FLUSH_INTERVAL"]
    dispatched = []
    with self.app.producer_or_acquire() as producer:
        for group in groups:
            sent = flush_shards.apply_async(
                (group,), queue=queue, expires=expires_s, producer=producer
            )
            dispatched.append({"id": sent.id, "shards": group})
    log.info(
        "flush: %d dirty shards sent as %d flush_shards tasks", sum(map(len, groups)), len(groups)
    )
    return {"dispatched": dispatched}


@shared_task(bind=True, acks_late=True, **RETRY_KWARGS)
def flush_shards(self, shards: list[int]) -> dict:
    """Flush one group of shards sent by ``flush_counters``, each under its flush lock
    (``Counters.flush_shards``): a shard another worker is flushing is ``skipped``."""
    return {**maintenance.flush([int(s) for s in shards]), "worker": self.request.hostname}


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
