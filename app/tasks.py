"""The site's own Celery tasks: the original system's recount tasks, by their original
names. Each recounts one row's counters from its source rows, alongside any pending
deltas (``Counters.reconcile``). The engine's flush and reconcile tasks come from
``engine.celery``."""

from __future__ import annotations

from celery import shared_task

from engine.celery import RETRY_KWARGS

from .counters import counters

POST_RECOUNTS = [
    "posts.likes_count",
    "posts.collects_count",
    "posts.shares_count",
    "posts.comments_count",
]
ARTICLE_RECOUNTS = [name.replace("posts.", "articles.") for name in POST_RECOUNTS]


def _recount(names: list[str], row_id: int) -> dict:
    return counters.reconcile(names, [row_id]).as_dict()


@shared_task(bind=True, **RETRY_KWARGS)
def update_post_counts(self, post_id: int) -> dict:
    return _recount(POST_RECOUNTS, post_id)


@shared_task(bind=True, **RETRY_KWARGS)
def update_article_counts(self, article_id: int) -> dict:
    return _recount(ARTICLE_RECOUNTS, article_id)


@shared_task(bind=True, **RETRY_KWARGS)
def update_post_comment_likes_count(self, comment_id: int) -> dict:
    return _recount(["post_comments.likes_count"], comment_id)


@shared_task(bind=True, **RETRY_KWARGS)
def update_article_comment_likes_count(self, comment_id: int) -> dict:
    return _recount(["comments.likes_count"], comment_id)
