"""What keeps one instance of the example site (examples/recipes) apart from every other
test: its own database, and on Redis db 13 its own counter scope, RedBeat prefix and
Celery queue, which it alone removes. No import of the site here: the wheel test uses
this from outside the site's environment."""

from __future__ import annotations

import json
import uuid

import redis

from tests.servers import ROOT, redis_url

EXAMPLE = ROOT / "examples" / "recipes"
REDIS_DB = 13  # the example's tests' own db (loadtests 10-11, bench 12, engine 14, app 15)
SHARDS = 4


def scope_and_queue() -> tuple[str, str]:
    """A fresh counter scope (also the RedBeat prefix's) and Celery queue."""
    run = uuid.uuid4().hex[:10]
    return f"rcp{run}", f"recipes-{run}"


def site_env(database_url: str, scope: str, queue: str) -> dict:
    """The ``FLASK_*`` variables that point one instance of the example at this test's
    database, Redis db, scope, RedBeat prefix and queue (``from_prefixed_env`` parses
    each value as JSON when it can)."""
    return {
        "FLASK_SQLALCHEMY_DATABASE_URI": database_url,
        "FLASK_REDIS_URL": redis_url(REDIS_DB),
        "FLASK_COUNTERS_SCOPE": scope,
        "FLASK_COUNTERS_SHARDS": str(SHARDS),
        "FLASK_COUNTERS_FLUSH_INTERVAL": "0.5",
        "FLASK_ADMIN_TOKEN": "admin-token",
        "FLASK_SECRET_KEY": "recipes-session-key",
        "FLASK_CELERY__beat_scheduler": "redbeat.RedBeatScheduler",
        "FLASK_CELERY__redbeat_key_prefix": f"rb:{scope}:",
        "FLASK_CELERY__task_default_queue": queue,
        "FLASK_CELERY__worker_enable_remote_control": "false",
    }


def clean_redis(r: redis.Redis, scope: str, queue: str) -> None:
    """This test's keys: its counter scope, RedBeat prefix and queue, and the broker's
    unacknowledged copies of its messages (a killed worker leaves them)."""
    keys = [
        *r.scan_iter(match=f"{{{scope}*", count=1000),
        *r.scan_iter(match=f"rb:{scope}:*", count=1000),
        *r.scan_iter(match=f"*{queue}*", count=1000),
    ]
    if keys:
        r.delete(*keys)
    for tag, raw in r.hgetall("unacked").items():
        if json.loads(raw)[-1] == queue:  # [message, exchange, routing key]
            r.hdel("unacked", tag)
            r.zrem("unacked_index", tag)
