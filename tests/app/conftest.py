"""Fixtures for the app's tests: one scratch database migrated once per session, and
Redis db 15 for counters and broker.

Several test runs may share db 15 (a developer's run next to ``make test``): each
run keys its counters with its own prefix and its Celery messages with its own
queue, and cleans only those keys, before and after each test."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

import flask_migrate
import pytest
import redis
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from harness.round_trips import counting_round_trips
from tests.engine.conftest import BUCKET_TABLES
from tests.proxy import TcpProxy
from tests.servers import ROOT, redis_url

REDIS_DB = 15
RUN = uuid.uuid4().hex[:10]
PREFIX = f"t{RUN}"  # this run's keys: {t<run>:<shard>}:..., {t<run>}:stats, redbeat:t<run>:...
QUEUE = f"test-{RUN}"
ADMIN_TOKEN = "test-admin-token"
APP_TABLES = (
    "users, posts, articles, post_comments, comments, user_actions, "
    "comment_likes, post_comment_likes"
)
COUNTED_TABLES = ("users", "posts", "articles", "post_comments", "comments", "user_actions")
LIKE_TABLES = ("comment_likes", "post_comment_likes")


def process_env(database_url: str, **settings: str) -> dict:
    """Environment of a worker or beat subprocess of this run: its database, Redis db
    and key prefix, the counter buffer on that Redis, plus ``settings``."""
    env = {
        **os.environ,
        "FLASK_SKIP_DOTENV": "1",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url(REDIS_DB),
        "COUNTERS_SCOPE": PREFIX,
        "COUNTERS_SHARDS": "4",
        "COUNTERS_VIEW_POLICY": "raw",  # every view counts; policy tests ask for dedupe
        **settings,
    }
    for key in ("COUNTERS_REDIS_URL", "COUNTERS_REDIS_CLUSTER"):
        env.pop(key, None)
    return env


def pytest_configure(config):
    # Celery's Redis result backend (celery.backends.redis) still calls SETEX, which
    # redis-py 8 deprecates; nothing in this project calls it.
    config.addinivalue_line(
        "filterwarnings",
        r"ignore:Call to deprecated setex\.:DeprecationWarning:celery\.backends\.redis",
    )


def app_config(database_url: str, **overrides) -> dict:
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url(REDIS_DB),
        "COUNTERS_REDIS_URL": None,
        "COUNTERS_REDIS_CLUSTER": False,
        "COUNTERS_SHARDS": 4,
        "COUNTERS_SCOPE": PREFIX,
        "CELERY": {"task_default_queue": QUEUE},
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "RATELIMIT_ENABLED": False,  # the limits' own tests turn them on
        # every view counts, as the tests of counting expect; the view policy's own
        # tests (test_view_policy.py, browser/test_view_policy_pages.py) turn it on
        "COUNTERS_VIEW_POLICY": "raw",
        **overrides,
    }


def close_app(app) -> None:
    # a coalescer pushes its tally now, into keys the r fixture then removes
    app.extensions["counters"].close()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def app_db(database_factory):
    scratch = database_factory("app")
    app = create_app(app_config(scratch.url))
    with app.app_context():
        flask_migrate.upgrade()
    close_app(app)
    return scratch


def counter_keys(client) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{{{PREFIX}*", count=1000))


def beat_keys(client) -> list[bytes]:
    """This run's RedBeat keys (entries, schedule, lock, stored intervals)."""
    return list(client.scan_iter(match=f"redbeat:{PREFIX}:*", count=1000))


def clean_redis(client) -> None:
    keys = counter_keys(client) + beat_keys(client)
    keys += list(client.scan_iter(match=f"*{QUEUE}*", count=1000))
    keys += list(client.scan_iter(match=f"LIMITS:LIMITER/limits:{PREFIX}/*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def pg_proxy(app_db):
    """(proxy, url): the test database reached through a TCP proxy the test can cut."""
    parts = urlsplit(app_db.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = parts.username or "postgres"
    yield proxy, parts._replace(netloc=f"{user}@127.0.0.1:{proxy.port}").geturl()
    proxy.close()


@pytest.fixture
def r():
    """Redis db 15, without this run's counter keys and queue."""
    client = redis.Redis.from_url(redis_url(REDIS_DB))
    clean_redis(client)
    yield client
    clean_redis(client)
    client.close()


@pytest.fixture
def make_app(app_db, r):
    """``make_app(**config)``: an app on the test database and Redis db 15."""
    made = []

    def make(**overrides):
        app = create_app(app_config(app_db.url, **overrides))
        made.append(app)
        return app

    yield make
    for app in made:
        close_app(app)


def fresh(app):
    """``app`` on empty tables, its existence index loaded."""
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("DELETE FROM counter_shards"))
        conn.execute(sa.text("DELETE FROM counter_uniques"))
        conn.execute(sa.text(f"TRUNCATE {', '.join(BUCKET_TABLES)}"))
    app.extensions["counters"].counters.ensure_index()  # as the first scheduled flush does
    return app


@pytest.fixture
def app(make_app):
    return fresh(make_app())


@pytest.fixture
def policy_app(make_app):
    """The app with the view policy on, as the site runs by default."""
    return fresh(make_app(COUNTERS_VIEW_POLICY="dedupe"))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def sql(app):
    with app.app_context():
        return db.engine


@pytest.fixture
def counters(app):
    """The app's ``engine.Counters``."""
    return app.extensions["counters"].counters


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def new_user(client, username: str) -> str:
    response = client.post("/api/users", json={"username": username})
    assert response.status_code == 201, response.json
    return response.json["token"]


@pytest.fixture
def user(client) -> str:
    """A user's bearer token."""
    return new_user(client, "alice")


@pytest.fixture
def other(client) -> str:
    return new_user(client, "bob")


def create(client, token: str, kind: str = "posts", title: str = "Hello") -> int:
    response = client.post(
        f"/api/{kind}", json={"title": title, "content": "body"}, headers=bearer(token)
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def comment(client, token: str, kind: str, parent: int, content: str = "hi") -> int:
    response = client.post(
        f"/api/{kind}/{parent}/comments", json={"content": content}, headers=bearer(token)
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def act(client, token: str, action: str, target: str, target_id: int):
    body = {"action_type": action, "target_type": target, "target_id": target_id}
    return client.post("/api/actions", json=body, headers=bearer(token))


def stored(sql, table: str, column: str, row_id: int) -> int:
    with sql.connect() as conn:
        query = sa.text(f"SELECT {column} FROM {table} WHERE id = :id")
        return conn.execute(query, {"id": row_id}).scalar_one()


def row_counts(sql) -> dict[str, int]:
    with sql.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in (*COUNTED_TABLES, *LIKE_TABLES)
        }


@pytest.fixture
def unchanged(r, sql):
    """``with unchanged():`` asserts the block created no Redis key, changed no Redis
    value and inserted no row."""

    def dump():
        return {k: r.dump(k) for k in counter_keys(r)}

    @contextmanager
    def check():
        keys, rows = dump(), row_counts(sql)
        yield
        assert dump() == keys
        assert row_counts(sql) == rows

    return check


def assert_error(response, status: int, error: str | None = None) -> None:
    """Every error under /api is ``{"error", "message"}`` JSON."""
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json"
    assert set(response.json) == {"error", "message"}, response.json
    assert isinstance(response.json["message"], str)
    if error is not None:
        assert response.json["error"] == error


def request_costs(sql: sa.Engine, send):
    """``(response, Redis commands sent, SQL statements)`` of ``send()``: a pipeline is
    one send, that is one round trip (redis-py's, or the engine's increment connection)."""
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    sa.event.listen(sql, "before_cursor_execute", listener)
    try:
        with counting_round_trips() as sent:
            response = send()
    finally:
        sa.event.remove(sql, "before_cursor_execute", listener)
    return response, len(sent), len(statements)
