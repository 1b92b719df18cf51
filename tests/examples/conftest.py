"""Fixtures of the example site's tests (examples/recipes), which use it the way its
README does: configured by ``FLASK_*`` environment variables, its worker and beat
started as ``celery -A make_celery worker|beat``.

Each test gets its own Postgres database and, on Redis db 13, its own counter scope,
RedBeat prefix and Celery queue; it removes those and nothing else.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from collections import Counter
from dataclasses import dataclass

import pytest
import redis
import sqlalchemy as sa

from harness.scratch import ScratchDatabase
from tests.examples.isolation import (
    EXAMPLE,
    REDIS_DB,
    clean_redis,
    scope_and_queue,
    site_env,
)
from tests.servers import ROOT, redis_url, scratch_database

sys.path.insert(0, str(EXAMPLE))  # where its start commands run: `flask --app recipes`
import recipes  # noqa: E402 - the example site, found on the path set above

USERS = [f"cook{i}" for i in range(6)]


@dataclass
class Site:
    """One test's instance of the example: its app, database, scope and queue."""

    app: object
    database: ScratchDatabase
    scope: str
    queue: str
    env: dict
    r: redis.Redis

    @property
    def sql(self) -> sa.Engine:
        with self.app.app_context():
            return recipes.db.engine

    @property
    def counters(self):
        """The app's ``engine.Counters``."""
        return recipes.counters.get(self.app)

    def create_recipes(self, n: int) -> list[int]:
        client = self.app.test_client()
        ids = []
        for i in range(n):
            response = client.post("/recipes", json={"title": f"dish {i}", "author": "ann"})
            assert response.status_code == 201, response.json
            ids.append(response.json["id"])
        return ids

    def stored(self) -> dict[int, tuple[int, int]]:
        """``{id: (view_count, hearts_count)}`` as Postgres holds them."""
        with self.sql.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, view_count, hearts_count FROM recipes"))
            return {r.id: (r.view_count, r.hearts_count) for r in rows}

    def hearts(self) -> Counter[int]:
        """The true heart count of each recipe: its rows in ``hearts``."""
        with self.sql.connect() as conn:
            query = sa.text("SELECT recipe_id, count(*) FROM hearts GROUP BY recipe_id")
            return Counter(dict(conn.execute(query).all()))

    def shown(self, ids: list[int]) -> dict[int, tuple[int, int]]:
        """``{id: (view_count, hearts_count)}`` as ``GET /recipes/<id>`` shows them."""
        client = self.app.test_client()
        out = {}
        for i in ids:
            body = client.get(f"/recipes/{i}").json
            out[i] = (body["view_count"], body["hearts_count"])
        return out

    def pending(self) -> int:
        return sum(s["pending"] + s["inflight"] for s in self.counters.backlog())

    def send(self, task: str, *args) -> None:
        self.app.extensions["celery"].send_task(task, args)

    def worker_cmd(self, name: str) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", "make_celery", "worker"),
            *("-Q", self.queue, "-c", "2", "-n", f"{name}-{self.scope}@%h", "--loglevel=info"),
            # no broadcast chatter with other workers on the same Redis db
            *("--without-mingle", "--without-gossip", "--without-heartbeat"),
        ]

    @staticmethod
    def beat_cmd() -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "make_celery", "beat", "--loglevel=info"]


def subprocess_env(site_vars: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    return {
        **env,
        **site_vars,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(ROOT)]),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def site(monkeypatch, processes):
    """The example, configured from the environment like a deployment (these variables
    are also what its worker and beat get); ``processes`` are stopped before it goes."""
    scope, queue = scope_and_queue()
    database = scratch_database("recipes")
    r = redis.Redis.from_url(redis_url(REDIS_DB))
    env = site_env(database.url, scope, queue)
    for key in [k for k in os.environ if k.startswith("FLASK_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = recipes.create_app()
    with app.app_context():
        recipes.init_db()
    yield Site(app, database, scope, queue, subprocess_env(env), r)
    recipes.counters.get(app).close()
    with app.app_context():
        recipes.db.engine.dispose()
    clean_redis(r, scope, queue)
    r.close()
    database.drop()


class Traffic:
    """Threads sending views and heart toggles through the site's HTTP API (Flask test
    client) until stopped or ``ops`` requests each; every success is one acknowledged
    change, kept per recipe: ``views``, and ``hearts`` (+1 per 201, -1 per 204)."""

    def __init__(self, app, ids: list[int], threads: int = 4, ops: int | None = None) -> None:
        self.app = app
        self.ids = ids
        self.ops = ops
        self.views: Counter[int] = Counter()
        self.hearts: Counter[int] = Counter()
        self.requests = 0
        self.unexpected: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(threads)
        ]

    def _one(self, client, rng: random.Random) -> None:
        recipe, roll = rng.choice(self.ids), rng.random()
        if roll < 0.6:
            kind, outcomes = "views", {204: 1}
            status = client.post(f"/recipes/{recipe}/view").status_code
        else:  # a heart toggle: a repeated heart is a 200, removing none a 404
            user = {"X-User": rng.choice(USERS)}
            if roll < 0.8:
                kind, outcomes = "hearts", {201: 1, 200: 0}
                status = client.post(f"/recipes/{recipe}/hearts", headers=user).status_code
            else:
                kind, outcomes = "hearts", {204: -1, 404: 0}
                status = client.delete(f"/recipes/{recipe}/hearts", headers=user).status_code
        with self._lock:
            self.requests += 1
            if status in outcomes:
                getattr(self, kind)[recipe] += outcomes[status]
            else:
                self.unexpected.append((kind, recipe, status))

    def _run(self, seed: int) -> None:
        client = self.app.test_client()
        rng = random.Random(seed)
        done = 0
        while not self._stop.is_set() and (self.ops is None or done < self.ops):
            self._one(client, rng)
            done += 1

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads)
        assert self.unexpected == []

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def acked(self, ids: list[int]) -> dict[int, tuple[int, int]]:
        """``{id: (views, hearts)}`` acknowledged so far."""
        with self._lock:
            return {i: (self.views[i], self.hearts[i]) for i in ids}
