"""The app under benchmark: ``app.create_app()`` plus bench-only routes, so every variant
is served by the same process, configuration and middleware.

    gunicorn 'benchmarks.bench_app:create_bench_app()'

Bench-only routes (never part of the product), all answering 204 with no body:

* ``POST /bench/posts/<id>/noop``   counts nothing: the framework ceiling;
* ``POST /bench/posts/<id>/sql``    one synchronous ``UPDATE posts … + 1`` per view;
* ``POST /bench/posts/<id>/celery`` ``update_post_view_count.delay(id)`` per view;
* ``POST /bench/posts/<id>/coalesced`` an experiment: views are summed in the process
  and pushed to the engine every ``COALESCE_INTERVAL_S`` by a background thread (one
  pipelined round trip for every row seen, existence-checked there). Not the product:
  a view is acknowledged before it is in Redis, so a crashed process loses up to one
  interval of them, and a view of a missing post is answered 204 and dropped.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app

from app import create_app
from app.errors import not_found
from app.extensions import db
from app.tasks import update_post_view_count

COALESCE_INTERVAL_S = 0.05
UPDATE_VIEW = sa.text("UPDATE posts SET view_count = view_count + 1 WHERE id = :id")

bp = Blueprint("bench", __name__, url_prefix="/bench/posts")


@bp.post("/<id:row_id>/noop")
def noop(row_id: int):
    return "", 204


@bp.post("/<id:row_id>/sql")
def sql_per_view(row_id: int):
    updated = db.session.execute(UPDATE_VIEW, {"id": row_id}).rowcount
    db.session.commit()
    if not updated:
        raise not_found("post")
    return "", 204


@bp.post("/<id:row_id>/celery")
def celery_per_view(row_id: int):
    update_post_view_count.delay(row_id)
    return "", 204


class Coalescer:
    """Per-process view sums, pushed to Redis by one daemon thread (started after fork)."""

    def __init__(self, counters) -> None:
        self.counters = counters
        self.lock = threading.Lock()
        self.views: Counter[int] = Counter()
        self.pid = None

    def add(self, row_id: int) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first view in this (forked) worker process
                self.pid = os.getpid()
                threading.Thread(target=self._run, daemon=True).start()
            self.views[row_id] += 1

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(COALESCE_INTERVAL_S):
            with self.lock:
                views, self.views = self.views, Counter()
            if views:
                self.push(views)

    def push(self, views: Counter) -> None:
        buffer = self.counters.buffer
        code = self.counters.registry.get("posts.view_count").code
        pipe = buffer.redis.pipeline(transaction=False)
        for row_id, n in views.items():
            keys, args = buffer._incr_call(row_id, [(code, n)], "posts")
            buffer._incr(keys=keys, args=args, client=pipe)
        pipe.execute()


@bp.post("/<id:row_id>/coalesced")
def coalesced(row_id: int):
    current_app.extensions["bench_coalescer"].add(row_id)
    return "", 204


def create_bench_app(test_config: dict | None = None) -> Flask:
    app = create_app(test_config)
    app.register_blueprint(bp)
    app.extensions["bench_coalescer"] = Coalescer(app.extensions["counters"])
    return app
