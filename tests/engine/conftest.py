"""Fixtures for the engine's own tests: a scratch database with two counted tables and
a recount source, Redis db 14 (ours: flushed before and after each test)."""

from __future__ import annotations

import contextlib
import os

import pytest
import redis
import sqlalchemy as sa

from engine import Counter, Counters, Registry, ViewPolicy, schema
from harness.redis_server import RedisProcess
from tests.servers import redis_url

REDIS_DB = int(os.environ.get("ENGINE_TEST_REDIS_DB", "14"))

TABLES = [
    """CREATE TABLE items (
        id bigserial PRIMARY KEY,
        hits bigint NOT NULL DEFAULT 0,
        likes bigint NOT NULL DEFAULT 0,
        title text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE notes (
        id bigserial PRIMARY KEY,
        hits bigint NOT NULL DEFAULT 0)""",
    """CREATE TABLE item_likes (
        id bigserial PRIMARY KEY,
        item_id bigint NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        user_id bigint NOT NULL,
        UNIQUE (item_id, user_id))""",
    """CREATE TABLE pages (
        id bigserial PRIMARY KEY,
        views bigint NOT NULL DEFAULT 0,
        bot_views bigint NOT NULL DEFAULT 0,
        uniques bigint NOT NULL DEFAULT 0)""",
]

LIKES_RECOUNT = (
    "SELECT item_id, count(*) FROM item_likes "
    "WHERE item_id = ANY(CAST(:ids AS bigint[])) GROUP BY item_id"
)

REGISTRY = Registry(
    [
        Counter("items", "hits", "ih"),
        Counter("items", "likes", "il", LIKES_RECOUNT),
        Counter("notes", "hits", "nh", trending=True),
    ]
)

# REGISTRY plus a view counter under a view policy (tests/engine/test_policy.py)
PAGE_VIEWS = Counter("pages", "views", "gv", policy=ViewPolicy(bots="bot_views", uniques="uniques"))
POLICY_REGISTRY = Registry([*REGISTRY, PAGE_VIEWS, Counter("pages", "bot_views", "gb")])


BUCKET_TABLES = (
    "counter_hourly",
    "counter_daily",
    "counter_window_edges",
    "counter_series",
    "counter_trending_totals",
)


def bucket_sums(sql: sa.Engine, table: str, column: str) -> dict[int, int]:
    """``{row id: sum of its hourly and daily buckets}`` of one counter."""
    query = """SELECT row_id, sum(n) FROM (
            SELECT row_id, n FROM counter_hourly WHERE tbl = :t AND col = :c
            UNION ALL SELECT row_id, n FROM counter_daily WHERE tbl = :t AND col = :c) b
        GROUP BY row_id"""
    with sql.connect() as conn:
        return {r: int(n) for r, n in conn.execute(sa.text(query), {"t": table, "c": column})}


def assert_buckets_match(sql: sa.Engine, table: str = "notes", column: str = "hits") -> None:
    """Every row's buckets sum to its column (rows at 0 have no bucket)."""
    values = {i: v for i, v in stored(sql, table, column).items() if v}
    assert bucket_sums(sql, table, column) == values


@pytest.fixture(scope="session")
def engine_db(database_factory):
    db = database_factory("engine")
    sql = sa.create_engine(db.url, pool_size=10, max_overflow=20)
    schema.create(sql)
    with sql.begin() as conn:
        for ddl in TABLES:
            conn.execute(sa.text(ddl))
    yield db
    sql.dispose()


@pytest.fixture
def sql(engine_db):
    eng = sa.create_engine(engine_db.url, pool_size=10, max_overflow=20)
    with eng.begin() as conn:
        conn.execute(sa.text("TRUNCATE items, notes, item_likes, pages RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("DELETE FROM counter_shards"))
        conn.execute(sa.text("DELETE FROM counter_scopes"))
        conn.execute(sa.text("DELETE FROM counter_uniques"))
        conn.execute(sa.text(f"TRUNCATE {', '.join(BUCKET_TABLES)}"))
    yield eng
    eng.dispose()


@pytest.fixture
def r():
    client = redis.Redis.from_url(redis_url(REDIS_DB))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def server(tmp_path):
    """A redis-server of the test's own that saves RDB dumps (harness/redis_server.py)."""
    proc = RedisProcess.rdb(tmp_path / "redis")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def victim_redis() -> list[str]:
    """The flush_victim arguments that reach the Redis of ``r`` (tests/cluster overrides)."""
    return [redis_url(REDIS_DB)]


@pytest.fixture
def make_counters(r, sql):
    def make(shards: int = 4, **kw) -> Counters:
        return Counters(r, sql, REGISTRY, shards=shards, **kw)

    return make


@pytest.fixture
def counters(make_counters) -> Counters:
    return make_counters()


@contextlib.contextmanager
def sql_statements(sql: sa.Engine):
    """The SQL statements sent on ``sql`` inside the block, as a list filled as they go."""
    sent: list[str] = []
    listener = lambda *args: sent.append(args[2])  # noqa: E731
    sa.event.listen(sql, "before_cursor_execute", listener)
    try:
        yield sent
    finally:
        sa.event.remove(sql, "before_cursor_execute", listener)


def seed(sql: sa.Engine, table: str, n: int) -> list[int]:
    with sql.begin() as conn:
        rows = conn.execute(
            sa.text(f"INSERT INTO {table} SELECT FROM generate_series(1, :n) RETURNING id"),
            {"n": n},
        )
        return [row[0] for row in rows]


def stored(sql: sa.Engine, table: str, column: str) -> dict[int, int]:
    with sql.connect() as conn:
        return dict(conn.execute(sa.text(f"SELECT id, {column} FROM {table}")).all())
