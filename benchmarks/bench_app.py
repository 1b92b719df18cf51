"""The app under benchmark: ``app.create_app()`` plus bench-only routes, so every variant
is served by the same process, configuration and middleware.

    gunicorn 'benchmarks.bench_app:create_bench_app()'

Bench-only routes (never part of the product), all answering 204 with no body:

* ``POST /bench/posts/<id>/noop``   counts nothing: the framework ceiling;
* ``POST /bench/posts/<id>/sql``    one synchronous ``UPDATE posts … + 1`` per view;
* ``POST /bench/posts/<id>/celery`` ``update_post_view_count.delay(id)`` per view: the
  original system's one task per view, defined here (the worker runs with
  ``--include benchmarks.bench_app``);
* ``POST /bench/posts/<id>/coalesced`` the opt-in coalescing mode (``engine.coalesce``
  (``COUNTERS_COALESCE_MS``, off by default), on for this route only, with a 50 ms
  interval: views of known posts are tallied in the process and pushed in one
  pipelined round trip; a hard-killed process loses up to one interval of them.
* ``POST /bench/posts/<id>/policy`` the beacon under the view policy
  (COUNTERS_VIEW_POLICY=dedupe) while the run's site counts ``raw``: a second
  ``engine.Counters`` on the same Redis, Postgres and scope with the policy on; every
  request is a new visitor (a fresh ``vid``), so every view takes the policy's full path
  (pair lookups, remembering it, the HyperLogLog) and counts, and the flush lands it.
"""

from __future__ import annotations

import itertools
import os

import sqlalchemy as sa
from celery import shared_task
from flask import Blueprint, Flask, current_app, request

from app import create_app
from app.counters import counters
from app.errors import not_found
from app.extensions import db
from app.kinds import POSTS
from engine import Counters, ViewCoalescer, redis_client
from engine.flask.visitors import salt
from engine.visitors import visit_of
from harness.agents import BROWSER

COALESCE_INTERVAL_MS = 50
UPDATE_VIEW = sa.text("UPDATE posts SET view_count = view_count + 1 WHERE id = :id")

bp = Blueprint("bench", __name__, url_prefix="/bench/posts")


@shared_task(name="bench.update_post_view_count")
def update_post_view_count(post_id: int) -> bool:
    """The original system's path: one task, one UPDATE per view. True when the post
    exists."""
    result = db.session.execute(UPDATE_VIEW, {"id": post_id})
    db.session.commit()
    return result.rowcount == 1


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


@bp.post("/<id:row_id>/coalesced")
def coalesced(row_id: int):
    if not current_app.extensions["bench_coalescer"].count(POSTS.views, row_id):
        raise not_found("post")
    return "", 204


_visitors = itertools.count()


@bp.post("/<id:row_id>/policy")
def policy(row_id: int):
    vid = f"bench{os.getpid():08d}{next(_visitors):014d}"  # a new visitor every time
    visit = visit_of(BROWSER, request.remote_addr or "", salt(), vid=vid)
    if not current_app.extensions["bench_policy"].view(POSTS.views, row_id, visit=visit):
        raise not_found("post")
    return "", 204


def create_bench_app(test_config: dict | None = None) -> Flask:
    app = create_app(test_config)
    app.register_blueprint(bp)
    site = counters.get(app)
    app.extensions["bench_policy"] = Counters(  # the view policy on, for its route only
        redis_client(
            app.config["COUNTERS_REDIS_URL"], cluster=app.config["COUNTERS_REDIS_CLUSTER"]
        ),
        site.sql,
        site.registry,
        shards=site.shards,
        scope=site.scope,
        view_policy="dedupe",
    )
    # the product's opt-in mode (COUNTERS_COALESCE_MS), on for this route only
    app.extensions["bench_coalescer"] = ViewCoalescer(
        counters.get(app), COALESCE_INTERVAL_MS / 1000
    )
    return app
