"""A process forked after the engine used Postgres (a Celery prefork pool process, a
gunicorn worker of a preloaded app) gets its own connections, not its parent's."""

import multiprocessing
import os

import sqlalchemy as sa

QUERIES = 300


def ask(sql: sa.Engine, tag: int) -> None:
    """Many round trips on the pooled connection, each checking its own answer."""
    for i in range(QUERIES):
        with sql.connect() as conn:
            got = conn.execute(sa.text("SELECT CAST(:v AS bigint)"), {"v": tag * 10_000 + i})
            assert got.scalar() == tag * 10_000 + i


def child(sql: sa.Engine, tag: int) -> None:
    try:
        ask(sql, tag)
    except BaseException:  # noqa: BLE001 - any failure is the answer
        os._exit(1)
    os._exit(0)


def test_forked_children_talk_to_postgres_on_their_own_connections(make_counters, sql):
    c = make_counters()
    c.flush_all()  # the parent now has a pooled connection, as after a startup check
    assert sql.pool.checkedin() >= 1
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=child, args=(sql, tag)) for tag in (1, 2)]
    for p in children:
        p.start()
    ask(sql, 3)  # the parent keeps using its own pool meanwhile
    for p in children:
        p.join(60)
    assert [p.exitcode for p in children] == [0, 0]
