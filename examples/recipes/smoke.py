"""Smoke test of the recipes site against real servers: a scratch database, one recipe,
one view and one heart, ``flask counters flush``, then the counts read from Postgres.

    SMOKE_PG_ADMIN_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/postgres \
    SMOKE_REDIS_URL=redis://127.0.0.1:6379/0 python smoke.py

Prints one JSON line and exits 0 when Postgres holds ``view_count = hearts_count = 1``.
It removes the database and the Redis keys it made.
"""

import json
import os
import sys
import uuid

import redis
import sqlalchemy as sa
from recipes import counters, create_app, db, init_db

import engine

ADMIN_URL = os.environ.get(
    "SMOKE_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1/postgres"
)
REDIS_URL = os.environ.get("SMOKE_REDIS_URL", "redis://127.0.0.1:6379/0")


def run(database_url: str, scope: str) -> dict:
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": REDIS_URL, "COUNTERS_SCOPE": scope}
    )
    with app.app_context():
        init_db()
    client = app.test_client()
    recipe = client.post("/recipes", json={"title": "Soup", "author": "ann"}).json["id"]
    assert client.post(f"/recipes/{recipe}/view").status_code == 204
    assert client.post(f"/recipes/{recipe}/hearts", headers={"X-User": "bob"}).status_code == 201
    flushed = app.test_cli_runner().invoke(args=["counters", "flush"])
    assert flushed.exit_code == 0, flushed.output
    with app.app_context(), db.engine.connect() as conn:
        query = sa.text("SELECT view_count, hearts_count FROM recipes WHERE id = :id")
        views, hearts = conn.execute(query, {"id": recipe}).one()
    counters.get(app).close()
    with app.app_context():
        db.engine.dispose()
    return {"engine": engine.__file__, "view_count": views, "hearts_count": hearts}


def main() -> int:
    name, scope = f"recipes_smoke_{uuid.uuid4().hex[:8]}", f"smoke{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        result = run(sa.make_url(ADMIN_URL).set(database=name).render_as_string(False), scope)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=f"{{{scope}*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()
    print(json.dumps(result))
    return 0 if (result["view_count"], result["hearts_count"]) == (1, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
