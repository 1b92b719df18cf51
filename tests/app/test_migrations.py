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
