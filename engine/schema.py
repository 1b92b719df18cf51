"""The engine's own Postgres objects: the per-shard ledger and the batch sequence.

``counter_shards`` keeps, per key prefix and shard, the seq of the last batch applied.
Batch seqs come from ``counter_batch_seq``, so they never repeat, even after Redis
loses its data; a batch whose seq is not above ``applied_seq`` is already in Postgres.
``gen``, ``base_seq``, ``past_gens`` and ``verdict`` say which Redis history that batch
came from and what the flush did with it (engine/lineage.py). The ledger is one row
per shard, so it never needs pruning. ``counter_scopes`` records each scope's shard
count (engine/layout.py).

Every statement is idempotent: ``create()`` (and a migration running :data:`DDL`)
brings a ledger of any earlier version up to date.
"""

from __future__ import annotations

import sqlalchemy as sa

from .errors import sql_errors

DDL = [
    "CREATE SEQUENCE IF NOT EXISTS counter_batch_seq AS bigint",
    """CREATE TABLE IF NOT EXISTS counter_shards (
        scope text NOT NULL,
        shard integer NOT NULL,
        applied_seq bigint NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (scope, shard)
    )""",
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS gen text",
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS base_seq bigint",
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS past_gens text[] NOT NULL DEFAULT '{}'",
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS verdict text NOT NULL DEFAULT 'applied'",
    """CREATE TABLE IF NOT EXISTS counter_scopes (
        scope text PRIMARY KEY,
        shards integer NOT NULL CHECK (shards > 0),
        changed_at timestamptz NOT NULL DEFAULT now()
    )""",
]

TABLES = ("counter_shards", "counter_scopes")  # not the app's: migrations leave them be

DROP = [
    "DROP TABLE IF EXISTS counter_scopes",
    "DROP TABLE IF EXISTS counter_shards",
    "DROP SEQUENCE IF EXISTS counter_batch_seq",
]


def create(sql: sa.Engine) -> None:
    """Create the ledger objects if missing (migrations run the same DDL)."""
    with sql_errors("create schema"), sql.begin() as conn:
        for stmt in DDL:
            conn.execute(sa.text(stmt))
