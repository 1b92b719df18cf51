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
import time
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from celery import shared_task
from flask import current_app

from engine import BufferUnavailable, CounterError, Counters, FlushSummary, StoreUnavailable
from engine.errors import redis_errors

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

# A shard is flushed under a lock of this TTL, so two workers do not both claim, number
# and fence the same batch. Well above a shard flush (about 30 ms for 1,500 counters in
# benchmarks/scaling.py); a worker killed mid-flush delays that shard by at most this
# long. A flush that outlives it only costs work: the engine fences the batch anyway.
FLUSH_LOCK_TTL_MS = 5_000
# Deletes the lock only while it holds our token: a flush that outlived the TTL must not
# drop the lock a newer flush of the shard has taken since.
RELEASE_LOCK_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def flush_lock_key(counters: Counters, shard: int) -> str:
    # the shard's hash tag: on a Redis Cluster the lock sits next to the shard's keys
    return f"{{{counters.keys.prefix}:{shard}}}:flushing"


def _lock(counters: Counters, shard: int) -> str | None:
    """A token when this process now holds the shard's flush lock, None when another does."""
    token = uuid.uuid4().hex
    with redis_errors(f"lock shard {shard}"):
        taken = counters.buffer.redis.set(
            flush_lock_key(counters, shard), token, nx=True, px=FLUSH_LOCK_TTL_MS
        )
    return token if taken else None


def _unlock(counters: Counters, shard: int, token: str) -> None:
    try:
        release = counters.buffer.redis.register_script(RELEASE_LOCK_LUA)
        with redis_errors(f"unlock shard {shard}"):
            release(keys=[flush_lock_key(counters, shard)], args=[token])
    except BufferUnavailable as exc:  # it expires by itself
        log.warning("could not release the flush lock of shard %d: %s", shard, exc)


def flush_group(shards: Sequence[int]) -> dict:
    """Flush ``shards`` one after the other, exactly once each (the engine fences every
    batch), and add the outcome to the shared stats like ``Counters.flush_all``.

    A shard whose flush lock another worker holds is skipped (listed in ``skipped``):
    that flush applies what is there, and the next scheduled flush what comes after.
    Returns the flush summary plus ``shards``, ``skipped`` and ``shard_batches`` (a record
    per batch: shard, seq, counters, resumed, already_applied). A failing shard does not
    stop the others; the first error is raised after the stats are kept.
    """
    counters = get_counters()
    started = time.perf_counter()
    summary, skipped = FlushSummary(), []
    first_error: CounterError | None = None
    for shard in shards:
        try:
            token = _lock(counters, shard)
            if token is None:
                skipped.append(shard)
                continue
            try:
                result = counters.flush_shard(shard)
                if result is not None:
                    summary.shards.append(result)
                    if result.resumed:  # an orphaned batch is done; now what piled up behind
                        result = counters.flush_shard(shard)
                        if result is not None:
                            summary.shards.append(result)
            finally:
                _unlock(counters, shard, token)
        except (StoreUnavailable, BufferUnavailable) as exc:
            summary.errors.append(f"shard {shard}: {exc}")
            first_error = first_error or exc
    summary.duration_s = time.perf_counter() - started
    try:
        counters.stats.record_flush(summary)
    except BufferUnavailable as exc:  # advisory: must not turn a done flush into a failed one
        log.warning("could not record counter stats: %s", exc)
    out = {
        **summary.as_dict(),
        "shards": list(shards),
        "skipped": skipped,
        "shard_batches": [
            {
                "shard": s.shard,
                "seq": s.seq,
                "counters": s.counters,
                "resumed": s.resumed,
                "already_applied": s.already_applied,
            }
            for s in summary.shards
        ],
    }
    maintenance._log_flush(out)  # the same JSON "flush" line as the synchronous flush
    if first_error is not None:
        first_error.summary = summary
        raise first_error
    return out


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
        return flush_group(groups[0] if groups else [])
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
    """Flush one group of shards sent by ``flush_counters``; see :func:`flush_group`."""
    return {**flush_group([int(s) for s in shards]), "worker": self.request.hostname}


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
