"""``flask db upgrade`` builds the whole schema, the engine's ledger included; downgrade
removes it."""

import flask_migrate
import sqlalchemy as sa

from app import create_app
from tests.app.conftest import app_config, close_app

TABLES = {
    "users",
    "posts",
    "articles",
    "post_comments",
    "comments",
    "user_actions",
    "comment_likes",
    "post_comment_likes",
    "counter_shards",
}


def test_upgrade_and_downgrade(database_factory, r):
    scratch = database_factory("migrations")
    app = create_app(app_config(scratch.url))
    try:
        with app.app_context():
            flask_migrate.upgrade()
            engine = sa.create_engine(scratch.url)
            inspector = sa.inspect(engine)
            assert set(inspector.get_table_names()) >= TABLES
            indexes = {i["name"]: i for i in inspector.get_indexes("user_actions")}
            assert indexes["uq_user_actions_toggle"]["unique"]
            with engine.connect() as conn:
                seq = conn.execute(sa.text("SELECT nextval('counter_batch_seq')")).scalar()
                assert seq >= 1
            flask_migrate.downgrade(revision="base")
            left = set(sa.inspect(engine).get_table_names())
            assert not (TABLES & left)
            with engine.connect() as conn:
                assert (
                    conn.execute(sa.text("SELECT to_regclass('counter_batch_seq')")).scalar()
                    is None
                )
            engine.dispose()
    finally:
        close_app(app)


def exists(conn, table: str) -> bool:
    return conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None


OLD_TOTALS = [("s", "posts", "view_count", "24h", 1, 5), ("s", "posts", "view_count", "7d", 1, 9)]
OLD_TOTALS += [("s", "posts", "view_count", "7d", 2, 4), ("t", "posts", "likes_count", "7d", 1, 3)]


def test_trending_totals_move_to_one_row_per_counted_row_and_back(database_factory, r):
    """Step 0007 moves step 0006's per-window totals into one row per counted row, and
    its downgrade moves them back, sums unchanged."""
    scratch = database_factory("migrations")
    app = create_app(app_config(scratch.url))
    engine = sa.create_engine(scratch.url)
    old = sa.text("SELECT scope, tbl, col, win, row_id, n FROM counter_window_totals")
    try:
        with app.app_context():
            flask_migrate.upgrade(revision="c6e1b0d4f2a8")
            with engine.begin() as conn:
                for scope, tbl, col, win, row_id, n in OLD_TOTALS:
                    edge = {"scope": scope, "tbl": tbl, "col": col, "win": win}
                    conn.execute(
                        sa.text(
                            "INSERT INTO counter_window_edges VALUES "
                            "(:scope, :tbl, :col, :win, now()) ON CONFLICT DO NOTHING"
                        ),
                        edge,
                    )
                    conn.execute(
                        sa.text(
                            "INSERT INTO counter_window_totals VALUES "
                            "(:scope, :tbl, :col, :win, :row_id, :n)"
                        ),
                        {**edge, "row_id": row_id, "n": n},
                    )
            flask_migrate.upgrade()
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT s.scope, s.col, t.row_id, t.n_24h, t.n_7d "
                        "FROM counter_trending_totals t JOIN counter_series s USING (series)"
                    )
                ).all()
                assert not exists(conn, "counter_window_totals")
            assert sorted(rows) == [
                ("s", "view_count", 1, 5, 9),
                ("s", "view_count", 2, 0, 4),
                ("t", "likes_count", 1, 0, 3),
            ]
            flask_migrate.downgrade(revision="c6e1b0d4f2a8")
            with engine.connect() as conn:
                assert sorted(conn.execute(old).all()) == sorted(OLD_TOTALS)
                assert not exists(conn, "counter_series")
    finally:
        engine.dispose()
        close_app(app)
