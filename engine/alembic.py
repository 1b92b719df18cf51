"""Alembic helper: apply the engine's schema steps (engine.schema) from a site's
migration.

    from engine import alembic as counter_schema

    def upgrade():
        counter_schema.upgrade(op, "0001_ledger")

    def downgrade():
        counter_schema.downgrade(op, "0001_ledger")

Steps are frozen files, so a migration that names one runs the same SQL forever. To
keep the SQL in the migration itself instead, paste ``flask counters schema-sql``.
"""

from __future__ import annotations

from . import schema

# step -> statements that undo it
UNDO = {
    "0001_ledger": [
        "DROP TABLE IF EXISTS counter_shards",
        "DROP SEQUENCE IF EXISTS counter_batch_seq",
    ],
    "0002_lineage": [
        f"ALTER TABLE counter_shards DROP COLUMN IF EXISTS {column}"
        for column in ("verdict", "past_gens", "base_seq", "gen")
    ],
    "0003_scopes": ["DROP TABLE IF EXISTS counter_scopes"],
    "0004_totals": [
        f"ALTER TABLE counter_shards DROP COLUMN IF EXISTS {column}"
        for column in ("deltas_dropped_rollback", "batches_rolled_back")
    ],
    # the totals back into step 0006's table (made by that step's own statements), a row
    # per window
    "0007_trending_rows": [
        *(s for s in schema.statements("0006_buckets") if "counter_window_totals" in s),
        "LOCK TABLE counter_window_edges, counter_trending_totals IN EXCLUSIVE MODE",
        """INSERT INTO counter_window_totals (scope, tbl, col, win, row_id, n)
    SELECT s.scope, s.tbl, s.col, w.win, t.row_id, w.n
      FROM counter_trending_totals t
      JOIN counter_series s ON s.series = t.series,
           LATERAL (VALUES ('24h', t.n_24h), ('7d', t.n_7d)) AS w(win, n)
     WHERE w.n <> 0
    ON CONFLICT (scope, tbl, col, win, row_id) DO NOTHING""",
        "DROP TABLE IF EXISTS counter_trending_totals",
        "DROP TABLE IF EXISTS counter_series",
    ],
}


def upgrade(op, step: str) -> None:
    for stmt in schema.statements(step):
        op.execute(stmt)


def downgrade(op, step: str) -> None:
    for stmt in UNDO[step]:
        op.execute(stmt)
