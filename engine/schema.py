"""The engine's own Postgres objects, as numbered, frozen steps of plain SQL.

``engine/sql/NNNN_name.sql`` holds each step; a released step is never edited (its
checksum is pinned in ``STEPS``, and a test fails if the file changes), a change is a
new step. Sites apply them with their own migrations: copy the SQL into a migration
(``flask counters schema-sql`` prints it), or call ``engine.alembic.upgrade(op, step)``
from one; or, without migrations, :func:`create` runs every step (idempotent).

Step 0007: ``counter_series`` numbers each counter (scope, table, column);
``counter_trending_totals`` holds a row's totals over every trending window in one row
keyed by that number. The totals of step 0006 move there and its table goes.

Step 0006: ``counter_hourly`` and ``counter_daily`` hold the time buckets of bucketed
counters, ``counter_window_edges`` the edges of the trending windows'
per-row totals (engine/windows.py).

Step 0003: ``counter_scopes`` records each scope's shard count (engine/layout.py).

Step 0004: ``counter_shards`` counts what rollbacks dropped (engine/stats.py DURABLE):
the flush transaction that drops a batch adds to them, so they outlive the Redis they
are about.

Step 0005: ``counter_uniques`` keeps each row's unique-viewer HyperLogLog
(engine/uniques.py).

Step 0001: ``counter_shards`` keeps, per scope and shard, the seq of the last batch
applied; batch seqs come from ``counter_batch_seq``, so they never repeat, even after
Redis loses its data. The ledger is one row per shard, so it never needs pruning.

Step 0002: ``gen``, ``base_seq``, ``past_gens`` and ``verdict`` say which Redis history
the last applied batch came from and what the flush did with it (engine/lineage.py).
"""

from __future__ import annotations

import hashlib
from importlib import resources

import sqlalchemy as sa

from .errors import sql_errors

# step -> sha256 of its file, pinned when the step was released
STEPS = {
    "0001_ledger": "40638bffcf5fd0e151ed5e30f57abae292c569877151128ccdf0721c4c331b50",
    "0002_lineage": "02b30004f818945774876804bb1f3d69981300244bbf1ee2de869b18a1f402ca",
    "0003_scopes": "e76b556869e4d71d4110e6640b0f61651bcce85e03fe041302c3ac76e1c299d4",
    "0004_totals": "0877ba97269dbf21a65576955a34b921bad4d1bc7cf63f1d7547ac936089c0f1",
    "0005_uniques": "750dd43da1857eca00caaa4f90ecdde152dbfdfba93b17b53eb952a1d6e86b56",
    "0006_buckets": "392f574bc9e60b59572988444ca10cefb023eff241fbea3b4603b57c0826ecd1",
    "0007_trending_rows": "798746a6b9576996b0ba6ac86e4cb493d9d1944a0dc025f005dba0ff6c378956",
}

TABLES = (
    "counter_shards",
    "counter_scopes",
    "counter_uniques",
    "counter_hourly",
    "counter_daily",
    "counter_window_edges",
    "counter_series",
    "counter_trending_totals",
)  # not the app's: migrations leave them be

DROP = [
    "DROP TABLE IF EXISTS counter_trending_totals",
    "DROP TABLE IF EXISTS counter_series",
    "DROP TABLE IF EXISTS counter_window_totals",
    "DROP TABLE IF EXISTS counter_window_edges",
    "DROP TABLE IF EXISTS counter_daily",
    "DROP TABLE IF EXISTS counter_hourly",
    "DROP TABLE IF EXISTS counter_uniques",
    "DROP TABLE IF EXISTS counter_scopes",
    "DROP TABLE IF EXISTS counter_shards",
    "DROP SEQUENCE IF EXISTS counter_batch_seq",
]


def step_sql(step: str) -> str:
    """The SQL of one step, as released."""
    if step not in STEPS:
        raise KeyError(f"unknown schema step {step!r}; known: {', '.join(STEPS)}")
    return resources.files(__package__).joinpath("sql", f"{step}.sql").read_text()


def checksum(step: str) -> str:
    return hashlib.sha256(step_sql(step).encode()).hexdigest()


def statements(step: str) -> list[str]:
    """The step's statements, one per item (comments dropped), for drivers that take one
    statement at a time."""
    lines = [ln for ln in step_sql(step).splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def all_sql() -> str:
    """Every step, in order: the plain-SQL form of the schema."""
    return "\n".join(step_sql(step) for step in STEPS)


def create(sql: sa.Engine) -> None:
    """Run every step (each is idempotent), in one transaction."""
    with sql_errors("create schema"), sql.begin() as conn:
        for step in STEPS:
            for stmt in statements(step):
                conn.execute(sa.text(stmt))
