"""Fixtures for the scaling tests: real ``celery worker`` and ``celery beat`` processes,
configured from the environment like a deployment, on this run's scratch database,
counter prefix and a queue of its own (see tests/app/conftest.py for the isolation)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from app.counters import counters
from app.extensions import db
from harness.stack import beat_command, worker_command
from tests.app.conftest import (  # noqa: F401 - app_db, make_app and r are fixtures
    APP_TABLES,
    PREFIX,
    QUEUE,
    REDIS_DB,
    RUN,
    app_db,
    create,
    make_app,
    new_user,
    r,
)
from tests.servers import ROOT, redis_url

SHARDS = 16
GROUP_SIZE = 4  # 16 shards: up to 4 flush_shards tasks per flush


def pytest_configure(config):
    # as in tests/app/conftest.py: Celery's Redis result backend still calls SETEX
    config.addinivalue_line(
        "filterwarnings",
        r"ignore:Call to deprecated setex\.:DeprecationWarning:celery\.backends\.redis",
    )


def stack_env(database_url: str, queue: str, **settings) -> dict:
    """The environment of a worker or beat process of this run (no ``.env`` file)."""
    env = {
        **os.environ,
        "FLASK_SKIP_DOTENV": "1",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url(REDIS_DB),
        "COUNTERS_SCOPE": PREFIX,
        "COUNTERS_SHARDS": str(SHARDS),
        "COUNTERS_FLUSH_GROUP_SIZE": str(GROUP_SIZE),
        "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    for key in ("COUNTERS_REDIS_URL", "COUNTERS_REDIS_CLUSTER"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in settings.items()})
    return env


def worker_cmd(queue: str, name: str, concurrency: int = 2) -> list[str]:
    return worker_command(
        *("-Q", queue, "-c", str(concurrency), "-n", f"{name}-{RUN}@%h", "--loglevel=info"),
        # no broadcast chatter with the workers of other runs on the same Redis db
        *("--without-mingle", "--without-gossip", "--without-heartbeat"),
    )


BEAT_CMD = beat_command("--loglevel=info")


@pytest.fixture
def scale_app(make_app):  # noqa: F811 - the fixture imported above
    """``scale_app(queue)``: an app with this module's shards and group size, sending its
    tasks to ``queue``, on emptied tables."""

    def make(queue: str, **overrides):
        app = make_app(
            COUNTERS_SHARDS=SHARDS,
            COUNTERS_FLUSH_GROUP_SIZE=GROUP_SIZE,
            CELERY={"task_default_queue": queue},
            **overrides,
        )
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE"))
            conn.execute(sa.text("DELETE FROM counter_shards"))
        counters.get(app).ensure_index()  # as the first scheduled flush does
        return app

    return make


def make_posts(app, n: int) -> list[int]:
    client = app.test_client()
    token = new_user(client, "scaler")
    return [create(client, token, title=f"post {i}") for i in range(n)]


class Traffic:
    """Threads counting views through the API (Flask test client) until stopped; every
    204 is one acknowledged view, kept per post."""

    def __init__(self, app, posts: list[int], threads: int = 3) -> None:
        self.app = app
        self.posts = posts
        self.acked: Counter[int] = Counter()
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, seed: int) -> None:
        client = self.app.test_client()
        rng = random.Random(seed)
        while not self._stop.is_set():
            post = rng.choice(self.posts)
            status = client.post(f"/api/posts/{post}/view").status_code
            with self._lock:
                if status == 204:
                    self.acked[post] += 1
                else:
                    self.failed += 1
            time.sleep(0.001)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.acked.values())


def views_in_postgres(app, posts: list[int]) -> dict[int, int]:
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, view_count FROM posts WHERE id = ANY(:ids)"), {"ids": posts}
        )
        return dict(rows.all())


def totals(app) -> dict[str, int]:
    return counters.get(app).shared_stats()["totals"]


def backlog(app) -> int:
    return sum(s["pending"] + s["inflight"] for s in counters.get(app).backlog())
