"""The engine's own Postgres objects: the per-shard ledger and the batch sequence.

``counter_shards`` keeps, per key prefix and shard, the seq of the last batch applied.
Batch seqs come from ``counter_batch_seq``, so they never repeat, even after Redis
loses its data; a batch whose seq is not above ``applied_seq`` is already in Postgres.
The ledger is one row per shard, so it never needs pruning.
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
]

DROP = ["DROP TABLE IF EXISTS counter_shards", "DROP SEQUENCE IF EXISTS counter_batch_seq"]


def create(sql: sa.Engine) -> None:
    """Create the ledger objects if missing (migrations run the same DDL)."""
    with sql_errors("create schema"), sql.begin() as conn:
        for stmt in DDL:
            conn.execute(sa.text(stmt))
